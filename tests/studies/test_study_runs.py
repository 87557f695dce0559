"""Every study runs in its --quick form on a CPU-only machine, writes its rows and its summary, and stores the GPU
cases it could not run as skipped, with the reason. Grids are narrowed (options.extra) to keep the suite short."""
import json
import subprocess
import sys

import pytest
import torch

from study_helpers import run_quick  # noqa: F401 (a fixture)

from perfkit.studies import STUDIES

NO_GPU = not torch.cuda.is_available()

#: Per study: the narrowed grid the test runs (cheap layers, one pass where a study has many).
NARROW = {
    "baseline": {},  # baseline has no narrowing knob: it is covered by tests/test_cli.py (perfkit run)
    "headline": {},  # its CPU cases only (the whole network at batch 1); the GPU ones are skipped
    "speedup2012": {"layers": ["pool5", "fc8"], "cpu_backends": ["torch", "channels_last", "onnxruntime"]},
    "backends": {"layers": ["relu7"], "passes": ["forward"]},
    "batch": {"batches": [1, 2], "passes": ["forward"]},
    "precision": {"layers": ["fc8"]},
    "energy": {"passes": ["forward"]},
    "roofline": {"layers": ["pool5", "fc8"]},
    "augmentation": {},  # batch 1: one image per augmentation case, and the CPU's train step at batch 1
    "multigpu": {"forms": ["ddp", "two_column"]},  # both on 2 gloo ranks: one torchrun launch
    # act6 (after fc6) forward, and one short training run per activation on the first 512 digits
    "activations": {"indices": [6], "passes": ["forward"], "lrs": [0.03], "epochs": 1, "train_images": 512},
    "ingredients": {"layers": ["network", "lrn1", "drop6"], "passes": ["forward"]},
}


@pytest.mark.parametrize("name", [n for n in STUDIES if n not in ("baseline", "train_time")])  # train_time: below
def test_quick_study_writes_rows_and_summary_on_the_cpu(name, run_quick):
    result, df, summaries = run_quick(name, **NARROW[name])
    assert len(df) == result.rows_added > 0
    assert df.case_key.is_unique
    assert not (df.status == "error").any(), df[df.status == "error"].note.tolist()
    cpu = df[df.device == "cpu"]
    assert len(cpu) and (cpu[cpu.backend != "triton"].status == "ok").all(), cpu[["case_key", "status", "note"]]
    # the summary is stored with the run, as text and data
    [stored] = summaries[summaries.run_id == result.run_id].to_dict("records")
    assert stored["study"] == name and stored["text"] == result.summary.text and stored["text"]
    assert stored["data"] is not None
    json.dumps(stored["data"])
    # nothing is recorded without a reason
    assert df[df.status != "ok"].note.notna().all()
    if NO_GPU:
        gpu = df[df.device.str.startswith("cuda")]
        assert len(gpu), f"{name} plans no GPU case on a machine without one"
        assert (gpu.status == "skipped").all()
        assert gpu.note.str.len().min() > 10
        assert "no CUDA device is available" in result.summary.text or "skipped" in result.summary.text


@pytest.mark.skipif(not NO_GPU, reason="checks the behaviour without a GPU")
def test_triton_is_skipped_on_the_cpu_with_the_interpreter_reason(run_quick):
    _, df, _ = run_quick("backends", layers=["relu7"], passes=["forward"])
    triton = df[(df.backend == "triton") & (df.device == "cpu")]
    assert len(triton) == 1 and triton.status.iloc[0] == "skipped"
    assert "interpreter" in triton.note.iloc[0]


@pytest.mark.skipif(not NO_GPU, reason="checks the behaviour without a GPU")
def test_energy_on_a_cpu_without_rapl_says_energy_was_not_measurable(run_quick):
    from perfkit.studies.energy import rapl_reason

    reason = rapl_reason()
    if reason is None:
        pytest.skip("this machine can read RAPL")
    result, df, _ = run_quick("energy", passes=["forward"])
    assert f"Energy was not measurable here: {reason}" in result.summary.text
    cpu = df[df.device == "cpu"]
    for column in ("energy_j", "energy_per_image_j", "images_per_j"):
        assert cpu[column].isna().all()  # null, never 0
    assert cpu.energy_note.str.contains("RAPL").all()


def test_roofline_on_the_cpu_uses_the_measured_ceilings(run_quick):
    result, df, _ = run_quick("roofline", peaks=True, layers=["fc8"])
    cpu = df[df.device == "cpu"]
    assert (cpu.peak_flops_per_s > 0).all() and (cpu.peak_bytes_per_s > 0).all()
    [row] = [r for r in result.summary.data["rows"] if r["device"] == "cpu"]
    assert row["bound_flops_per_s"] > 0 and row["fraction"] > 0 and row["limit"] in ("memory", "compute")
    assert "ceilings" in result.summary.text and "of bound" in result.summary.text


def test_cli_runs_a_study_and_lists_them(tmp_path):
    """The real command, timing and all, on the study with the smallest grid (train_time: one CPU case)."""
    listed = subprocess.run([sys.executable, "-m", "perfkit", "study", "--list"], capture_output=True, text=True,
                            timeout=120)
    assert listed.returncode == 0
    for name in STUDIES:
        assert name in listed.stdout
    store = tmp_path / "s.db"
    done = subprocess.run([sys.executable, "-m", "perfkit", "study", "train_time", "--quick", "--device", "cpu",
                           "--batch", "1", "--store", str(store), "--no-progress"], capture_output=True, text=True,
                          timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "days for 90 epochs" in done.stdout and "GTX 580" in done.stdout
    from perfkit.results.store import load_measurements, load_summaries

    df = load_measurements(store)
    cpu, gpu = df[df.device == "cpu"], df[df.device.str.startswith("cuda")]
    assert len(cpu) == 1 and (cpu.status == "ok").all() and cpu.layer.iloc[0] == "network"
    if NO_GPU:
        assert len(gpu) >= 3 and (gpu.status == "skipped").all() and gpu.note.notna().all()
    [summary] = load_summaries(store).to_dict("records")
    assert summary["study"] == "train_time" and summary["text"].strip() in done.stdout
