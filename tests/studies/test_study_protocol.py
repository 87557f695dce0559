"""The study declarations (perfkit.study.Study): the registry, the hooks' defaults, the studies' own command-line
options, and the small helpers the studies share."""
from dataclasses import replace

import pandas as pd
import pytest

from perfkit.app.cli import _study_options, build_parser
from perfkit.app.tables import fmt_speedup, fmt_times, geomean, ratio
from perfkit.runner import RunnerConfig
from perfkit.studies import STUDIES, _MODULES, _register, activations, baseline, energy, headline, roofline, \
    study_option_owner
from perfkit.studies._common import this_run
from perfkit.study import (FULL_TIMING, QUICK_TIMING, Study, StudyOption, StudyOptionError, StudyOptions, as_study,
                           run_study)

QUICK = StudyOptions(devices=("cpu",), quick=True)
FULL = StudyOptions(devices=("cpu",))


def test_every_registered_study_is_its_modules_declaration():
    assert [m.STUDY for m in _MODULES] == list(STUDIES.values())
    for name, study in STUDIES.items():
        assert isinstance(study, Study) and study.name == name and study.description
        # the names campaign.py and older callers use
        assert study.NAME == study.name and study.DESCRIPTION == study.description


def test_the_hooks_each_study_declares():
    hooks = {name: tuple(h for h in ("timing", "measure_case", "run_cases") if getattr(s, h) is not None)
             for name, s in STUDIES.items()}
    assert {n: h for n, h in hooks.items() if h} == {"headline": ("timing",), "activations": ("measure_case",),
                                                      "batch": ("run_cases",), "multigpu": ("run_cases",)}
    assert [n for n, s in STUDIES.items() if s.quick_energy] == ["energy"]
    assert {s.name: [o.flag for o in s.cli_options] for s in STUDIES.values() if s.cli_options} == \
        {"activations": ["--cifar10"]}


def test_timing_and_energy_defaults():
    study = roofline.STUDY
    assert study.timing_for(QUICK) == QUICK_TIMING and study.timing_for(FULL) == FULL_TIMING
    assert headline.STUDY.timing_for(FULL) == headline.TIMING and headline.STUDY.timing_for(QUICK) == QUICK_TIMING
    assert (study.energy_for(QUICK), study.energy_for(FULL)) == (False, True)
    assert (energy.STUDY.energy_for(QUICK), energy.STUDY.energy_for(FULL)) == (True, True)
    config = headline.STUDY.runner_config(QUICK, energy=False, energy_off_note="n")
    assert config == RunnerConfig(timing=QUICK_TIMING, energy=False, energy_off_note="n")


def test_hooks_are_handed_to_the_runner():
    calls = []

    class FakeRunner:
        def run(self, cases):
            calls.append(("runner", cases))
            return ["row"]

    assert baseline.STUDY.measure_hook(QUICK) is None
    assert baseline.STUDY.run(FakeRunner(), ["c"]) == ["row"] and calls == [("runner", ["c"])]
    seen = []
    study = replace(baseline.STUDY, measure_case=lambda case, runner, options: seen.append((case, runner, options)),
                    run_cases=lambda runner, cases: ["own"])
    study.measure_hook(QUICK)("case", "runner")
    assert seen == [("case", "runner", QUICK)]
    assert study.run(FakeRunner(), ["c"]) == ["own"] and len(calls) == 1


def test_as_study_takes_a_study_or_a_module_and_probes_nothing_else():
    assert as_study(energy) is energy.STUDY is as_study(energy.STUDY)

    class LooksLikeAStudy:  # the old duck-typed form: a name, cases and summarize, found by attribute
        NAME = "baseline"
        summarize = staticmethod(baseline.summarize)
        cases = staticmethod(baseline.cases)

    with pytest.raises(TypeError, match="declare a perfkit.study.Study"):
        as_study(LooksLikeAStudy)


def test_a_narrowed_study_runs(tmp_path):
    narrowed = replace(baseline.STUDY, cases=lambda options: baseline.cases(options)[:1])
    config = RunnerConfig(timing=QUICK_TIMING, check_batch=1, device_peaks=False, energy=False)
    result = run_study(narrowed, replace(QUICK, batch=1), tmp_path / "s.db", show_progress=False, config=config)
    assert result.rows_added == 1 and result.summary.text


def test_declarations_are_checked():
    with pytest.raises(ValueError, match="long option"):
        StudyOption("-c", help="x")
    with pytest.raises(TypeError, match="must be callable"):
        Study("x", "x", cases=baseline.cases, summarize=baseline.summarize, timing=QUICK_TIMING)
    option = StudyOption("--data-dir", help="x")
    assert (option.dest, option.extra_key) == ("data_dir", "data_dir")
    assert option.given("d") and not option.given(None) and not option.given("")  # --cifar10 '' was never given
    assert not StudyOption("--n", help="x", type=int, default=3).given(3)
    assert StudyOption("--data-dir", help="x", key="data").extra_key == "data"
    one = Study("one", "x", cases=baseline.cases, summarize=baseline.summarize, cli_options=(option,))
    with pytest.raises(ValueError, match="declares an option twice"):
        replace(one, cli_options=(option, option))
    with pytest.raises(ValueError, match="--data-dir is declared by the one and two studies"):
        _register([one, replace(one, name="two")])
    with pytest.raises(ValueError, match="two studies are named"):
        _register([one, one])


def test_a_study_option_lands_in_extra_for_its_study_only(tmp_path):
    (tmp_path / "data_batch_1").write_bytes(b"")
    assert study_option_owner("--cifar10") is activations.STUDY and study_option_owner("--nope") is None
    parser = build_parser()
    args = parser.parse_args(["study", "activations", "--cifar10", str(tmp_path)])
    options, code = _study_options(args, parser, "study", ["activations"])
    assert code == 0 and options.extra == {"cifar10": str(tmp_path.resolve())}
    args = parser.parse_args(["study", "activations"])
    options, _ = _study_options(args, parser, "study", ["activations"])
    assert options.extra == {}  # not given: nothing lands, the run's arguments stay as they were
    (tmp_path / "empty").mkdir()
    with pytest.raises(StudyOptionError, match="no training batches"):
        activations.cifar10_dir(str(tmp_path / "empty"))


def test_study_help_names_the_study_an_option_belongs_to(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["study", "--help"])
    out = capsys.readouterr().out
    assert "--cifar10 DIR" in out and "activations only: train on CIFAR-10's python batches" in " ".join(out.split())


# -- the shared helpers ---------------------------------------------------------------------------------------------
def test_ratio_geomean_and_speedup_formats():
    assert ratio(6, 3) == 2 and ratio(None, 3) is None and ratio(6, 0) is None and ratio(6, None) is None
    assert ratio(0, 3) == 0
    assert geomean([2, 8, None, 0]) == pytest.approx(4) and geomean([]) is None and geomean([None, 0]) is None
    assert geomean([4, float("inf"), -1, float("nan")], positive_only=True) == pytest.approx(4)
    with pytest.raises(ValueError):
        geomean([4, -1])  # the backends study's filter: a negative value reaches the logarithm, as it always did
    assert fmt_speedup(None) == "-" and fmt_speedup(1.234) == "1.23x"
    assert fmt_times(1234.56) == "1,234.6x"


def test_this_run_keeps_the_runs_rows_of_a_table(tmp_path):
    df = pd.DataFrame({"run_id": ["b"], "store": [str(tmp_path / "s.db")]})
    table = pd.DataFrame({"run_id": ["a", "b", "b"], "x": [1, 2, 3]})
    assert this_run(df, lambda path: table).x.tolist() == [2, 3]
    assert this_run(df.iloc[0:0], lambda path: table) is None
    assert this_run(df.drop(columns=["store"]), lambda path: table) is None
    assert this_run(df, lambda path: table[table.run_id == "a"]) is None
    assert this_run(df, lambda path: table.iloc[0:0]) is None

    from perfkit.results.store import StoreError

    def refused(path):
        raise StoreError("not a perfkit store")

    assert this_run(df, refused) is None
