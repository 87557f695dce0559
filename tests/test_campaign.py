"""`perfkit campaign` end to end on a CPU-only machine: every phase accounted for, GPU parts skipped with the reason,
one folder with the store, the CSV, the headlines and the dashboard."""
import json
import subprocess
import sys

import pytest
import torch

from perfkit.campaign import Campaign, PHASE_SHARES, slug


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only form")
def test_quick_campaign_on_a_cpu_machine(tmp_path):
    out = tmp_path / "results" / "this-machine"
    done = subprocess.run([sys.executable, "-m", "perfkit", "campaign", "--quick", "--device", "cpu", "--out", str(out),
                           "--budget-minutes", "2", "--no-progress"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    files = {p.name for p in out.iterdir()}
    assert {"perfkit.db", "measurements.csv", "HEADLINES.md", "campaign.json", "report.html"} <= files
    assert len(files) <= 8  # what a device machine can hand back in one call
    doc = json.loads((out / "campaign.json").read_text())
    phases = {p["name"]: p for p in doc["phases"]}
    assert list(phases) == ["tests", "studies", "profile", "bench", "export"]
    assert phases["tests"]["status"] == "skipped" and "no GPU" in phases["tests"]["note"]
    assert phases["profile"]["status"] == "skipped" and "no GPU" in phases["profile"]["note"]
    assert phases["bench"]["status"] == "skipped" and "no GPU" in phases["bench"]["note"]
    assert phases["studies"]["status"] in ("ran", "partial")
    assert "speedup2012" in phases["studies"]["detail"] and "baseline" not in phases["studies"]["detail"]
    assert doc["elapsed_s"] < 2 * 60 + 120  # the budget, plus the export and the case in flight
    headlines = (out / "HEADLINES.md").read_text()
    for heading in ("## Triton and torch.compile against torch eager", "## GPU against CPU", "## Energy",
                    "## Fraction of the roofline per layer", "## Days to train"):
        assert heading in headlines
    assert "no CUDA device is available" in headlines  # GPU headlines say why they are empty
    csv = (out / "measurements.csv").read_text().splitlines()
    assert csv[0].startswith("run_id,case_key") and len(csv) > 1


def test_the_budget_is_shared_out_in_proportion_to_the_phases_left(tmp_path):
    campaign = Campaign(tmp_path, ("cpu",), None, budget_s=1000, quick=False, full=False)
    export = 1 - sum(PHASE_SHARES.values())
    assert campaign.slice_for("tests") == pytest.approx(1000 * 0.15, rel=1e-3)
    assert campaign.slice_for("bench") == pytest.approx(1000 * 0.12 / (0.12 + export), rel=1e-3)


def test_results_folder_is_named_after_the_device():
    assert slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
