"""The "Where the time goes inside a case" section, from a store `perfkit profile` wrote on this machine."""
from __future__ import annotations

import pytest

from perfkit.app.cli import main
from perfkit.results.store import load_profile_ops, load_profiles


@pytest.fixture(scope="module")
def profile_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("profile") / "profiled.db"
    code = main(["profile", "--device", "cpu", "--layer", "fc8,network", "--backend", "torch,compile", "--batch", "1",
                 "--pass", "forward", "--steps", "1", "--no-progress", "--store", str(path)])
    assert code == 0
    return path


def test_the_section_draws_each_profiled_case_by_kind_and_layer(profile_store):
    from perfkit.dashboards import build

    report = build([profile_store])
    section = next(s for s in report.sections if s.id == "profiles")
    assert [f.name for f in section.figures] == ["profile-kinds", "profile-layers", "profile-launches"]
    kinds = next(f for f in section.figures if f.name == "profile-kinds").fig
    ops = load_profile_ops(profile_store)
    profiles = load_profiles(profile_store)
    # each case's stacked bar adds up to its host ops' self time per step (CPU cases)
    eager = profiles[profiles.case_key.str.contains("network/torch/")].iloc[0]
    mine = ops[(ops.case_key == eager.case_key) & (ops.on_device == 0)]
    label = next(y for t in kinds.data for y in t.y if y.startswith("network forward · torch eager"))
    drawn = sum(x for t in kinds.data for y, x in zip(t.y, t.x) if y == label and x == x)
    assert drawn == pytest.approx(mine.self_s_per_step.sum() * 1e3)
    launches = next(f for f in section.figures if f.name == "profile-launches").fig
    assert {t.name for t in launches.data} == {"torch eager", "torch.compile"}
    html = report.to_html()
    assert "Where the time goes inside a case" in html and eager.trace_path in html
    assert "Top 5 ops per case by self time" in html and "aten::addmm" in html


def test_case_labels_name_the_dtype_and_batch(profile_store):
    from perfkit.dashboards import build

    report = build([profile_store])
    kinds = next(f for f in report.figures if f.name == "profile-kinds").fig
    labels = {y for t in kinds.data for y in t.y}
    assert "network forward · torch eager · CPU 2t · fp32 · b1".replace("2t", f"{_threads()}t") in labels


def _threads() -> int:
    import torch

    return torch.get_num_threads()
