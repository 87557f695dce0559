"""`perfkit campaign` on a CPU-only machine: every phase accounted for, GPU parts skipped with the reason, one folder
with the store, the CSV, the headlines and the dashboard; that folder valid after a SIGKILL at any moment and resumed
by the next command; and the plan for a GPU, which fits its budget by its own estimate."""
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

from perfkit.app.campaign import FILES, PHASE_SHARES, Campaign, slug
from perfkit.app.campaignplan import format_plan, make_plan

QUICK = [sys.executable, "-m", "perfkit", "campaign", "--quick", "--device", "cpu", "--no-progress"]


def _no_journal_files(out):
    return not any((out / f"perfkit.db{suffix}").exists() for suffix in ("-wal", "-shm"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only form")
def test_quick_campaign_on_a_cpu_machine(tmp_path):
    out = tmp_path / "results" / "this-machine"
    done = subprocess.run(QUICK + ["--out", str(out), "--budget-minutes", "2"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    files = {p.name for p in out.iterdir()}
    assert {"perfkit.db", "measurements.csv", "HEADLINES.md", "campaign.json", "report.html"} <= files
    assert files <= set(FILES) and len(files) <= 8  # what a device machine can hand back in one call
    assert _no_journal_files(out) and not list(out.parent.glob(".this-machine-*"))  # no temporary file left
    doc = json.loads((out / "campaign.json").read_text())
    phases = {p["name"]: p for p in doc["phases"]}
    assert list(phases) == ["headline", "tests", "energy", "roofline", "rest", "export"]
    assert phases["tests"]["status"] == "skipped" and "no GPU" in phases["tests"]["note"]
    assert phases["headline"]["status"] == "ran" and "headline" in phases["headline"]["detail"]
    rest = phases["rest"]["detail"]
    assert rest["profile"]["status"] == "skipped" and rest["bench"]["status"] == "skipped"
    assert "speedup2012" in rest["studies"] and "baseline" not in rest["studies"]
    assert doc["elapsed_s"] < 2 * 60 + 60  # the budget, plus the export and the case in flight
    assert doc["case_cap_s"] > 0 and len(doc["commands"]) == 1
    headlines = (out / "HEADLINES.md").read_text()
    for heading in ("## Headline: Triton and torch.compile against torch eager, the GPU against the CPU",
                    "## Energy", "## Fraction of the roofline per layer", "## The 2012 comparison per layer",
                    "## Days to train"):
        assert heading in headlines
    assert "no CUDA device is available" in headlines  # GPU headlines say why they are empty
    # each section is a study's stored summary, word for word: nothing is recomputed for the headlines
    from perfkit.results.store import load_summaries

    summaries = load_summaries(out / "perfkit.db")
    for study in ("headline", "roofline"):
        assert all(text in headlines for text in summaries[summaries.study == study].text)
    df = pd.read_csv(out / "measurements.csv")
    assert len(df) > 1 and {"headline", "roofline", "speedup2012"} <= set(df.study)
    cpu_headline = df[(df.study == "headline") & (df.device == "cpu")]
    assert set(cpu_headline.status) == {"ok"} and set(cpu_headline.pass_name) == {"forward", "train_step"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only form")
def test_a_sigkilled_campaign_leaves_valid_files_and_the_next_command_resumes(tmp_path):
    """SIGKILL mid-phase (once the rest phase's studies have stored rows), then read every file: the store opens with
    no -wal file, the CSV parses and holds the store's rows up to the case in flight, campaign.json parses and says
    which phase was running. A second command into the folder resumes instead of measuring again."""
    out = tmp_path / "out"
    proc = subprocess.Popen(QUICK + ["--out", str(out), "--budget-minutes", "3"], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 600
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.5)
            try:
                doc = json.loads((out / "campaign.json").read_text())
            except (OSError, ValueError):
                continue
            if doc["phases"][-1]["name"] == "rest" and (out / "measurements.csv").exists() and \
                    "speedup2012" in (out / "measurements.csv").read_text():
                break
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        os.killpg(proc.pid, signal.SIGKILL)  # mid-phase, mid-case: whatever it was doing
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    files = {p.name for p in out.iterdir()}
    assert files <= set(FILES) and _no_journal_files(out), files
    con = sqlite3.connect(f"file:{out / 'perfkit.db'}?mode=ro", uri=True)
    stored = {r[0] for r in con.execute("SELECT run_id || '/' || case_key FROM measurements")}
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()
    assert _no_journal_files(out)  # reading it made none either
    csv = pd.read_csv(out / "measurements.csv")
    in_csv = set(csv.run_id + "/" + csv.case_key)
    assert in_csv <= stored and len(stored - in_csv) <= 1  # the CSV is current up to the case in flight
    doc = json.loads((out / "campaign.json").read_text())
    assert doc["phases"][-1]["name"] == "rest" and doc["phases"][-1]["status"] == "running"
    assert "## Headline" in (out / "HEADLINES.md").read_text()

    again = subprocess.run(QUICK + ["--out", str(out), "--budget-minutes", "1"], cwd=tmp_path, capture_output=True,
                           text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    doc = json.loads((out / "campaign.json").read_text())
    assert len(doc["commands"]) == 2
    first = [p for p in doc["phases"] if p["command"] == 0]
    second = {p["name"]: p for p in doc["phases"] if p["command"] == 1}
    assert first[-1]["name"] == "rest" and first[-1]["status"] == "partial" and "killed" in first[-1]["note"]
    assert second["headline"]["status"] == "done"  # finished by the first command: not measured again
    csv = pd.read_csv(out / "measurements.csv")
    assert not csv.duplicated(["run_id", "case_key"]).any()
    assert len(set(csv[csv.study == "headline"].run_id)) == 2  # the headline run and the energy run, once each
    assert _no_journal_files(out)


def test_the_budget_is_shared_out_in_proportion_to_the_phases_left(tmp_path):
    campaign = Campaign(tmp_path, ("cpu",), None, budget_s=1000, quick=False, full=False)
    usable = campaign.left()
    assert usable == pytest.approx(1000 - 10, abs=1)  # the export's reserve is kept back
    assert campaign.slice_for("headline") == pytest.approx(usable * PHASE_SHARES["headline"], rel=1e-3)
    assert campaign.slice_for("rest") == pytest.approx(usable, rel=1e-3)  # the last phase gets all that is left


def test_results_folder_is_named_after_the_device():
    assert slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"


# -- the plan -----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("gpu", ["h100", "h200", "a100"])
def test_the_five_minute_plan_fits_its_budget_by_its_own_estimate(gpu):
    plan = make_plan(gpu, 5, list_binaries=False)
    assert plan.budget_s == 300
    assert plan.estimate_s <= plan.budget_s, format_plan(plan, verbose=False)
    for phase in plan.phases:
        assert phase.estimate_s <= phase.slice_s + 1e-6, (phase.name, phase.estimate_s, phase.slice_s)
    headline = plan.phases[0]
    assert headline.name == "headline"
    # what the first minutes are for: eager and triton, every pass and dtype of the headline table, and the CPU ratio
    first = [p for p in headline.cases if p.case.backend in ("torch", "triton") and p.case.variant == "alexnet2012"]
    assert len(first) == 14 and all(p.fits for p in first), format_plan(plan)


def test_a_longer_budget_extends_the_same_plan():
    short, longer = make_plan("h100", 5, list_binaries=False), make_plan("h100", 9, list_binaries=False)
    assert [p.name for p in short.phases] == [p.name for p in longer.phases]
    fits = lambda plan: {(p.name, c.case.key) for p in plan.phases for c in p.cases if c.fits}  # noqa: E731
    assert fits(short) < fits(longer)
    assert longer.estimate_s <= longer.budget_s


def test_measured_case_times_replace_the_model(tmp_path):
    from perfkit.app.campaignplan import Estimator, gpu_spec
    from perfkit.cases import Case
    from perfkit.study import QUICK_TIMING

    case = Case(layer="network", device="cuda:0", dtype="bfloat16", batch=128, pass_name="train_step")
    model = Estimator(gpu_spec("h100")).estimate(case, QUICK_TIMING)
    measured = Estimator(gpu_spec("h100"), measured={case.key: 42.0}).estimate(case, QUICK_TIMING)
    assert model.basis == "model" and 0 < model.estimate_s < 42 and (measured.basis, measured.estimate_s) == (
        "measured", 42.0)
    compiled = Estimator(gpu_spec("h100")).estimate(Case(layer="network", backend="compile", device="cuda:0",
                                                         dtype="bfloat16", batch=128, pass_name="train_step"),
                                                    QUICK_TIMING)
    assert compiled.estimate_s > model.estimate_s + 60  # two shapes compiled


def test_the_plan_command_runs_nothing_and_prints_the_phases(capsys, tmp_path, monkeypatch):
    from perfkit.app.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["campaign", "--plan", "--gpu", "h100"]) == 0
    text = capsys.readouterr().out
    assert "NVIDIA H100 SXM" in text and "budget 5 min" in text
    for i, phase in enumerate(PHASE_SHARES, 1):
        assert f"{i}. {phase}: slice" in text
    assert "Triton binaries" in text and not list(tmp_path.iterdir())  # nothing run, nothing written


def test_gpu_without_plan_is_a_usage_error(capsys):
    from perfkit.app.cli import main

    with pytest.raises(SystemExit) as stop:
        code = main(["campaign", "--gpu", "h100"])
        raise SystemExit(code)
    assert stop.value.code == 2 and "--plan" in capsys.readouterr().err
