"""The multigpu study: its grids on machines with 0, 1 and 8 GPUs (planning runs nothing), the rule that its GPU form
needs 2 GPUs, and a summary that computes speedups and scaling efficiencies from measured rows only."""
import json

import pytest

from perfkit.workloads import distributed
from perfkit.cases import Case
from perfkit.specs import build_network
from perfkit.study import StudyOptions
from perfkit.studies import _common, multigpu

from study_helpers import frame, measured

GPU = "cuda:0"


def gpus(monkeypatch, n):
    monkeypatch.setattr(multigpu, "gpu_count", lambda: n)
    monkeypatch.setattr(_common, "gpu_visible", lambda: n > 0)


def forms(cases, device_kind):
    return sorted((c.option("parallel"), c.option("world_size"), c.batch) for c in cases
                  if c.device.startswith(device_kind))


def test_without_gpus_the_cpu_form_runs_with_two_gloo_processes(monkeypatch):
    gpus(monkeypatch, 0)
    cases = multigpu.cases(StudyOptions(devices=("cpu",), quick=True, threads=2))
    cpu = [c for c in cases if c.device == "cpu"]
    assert forms(cpu, "cpu") == [("ddp", 2, 4), ("single", 1, 2), ("two_column", 2, 2)]
    assert {c.option("dist_backend") for c in cpu} == {"gloo"}
    assert {c.threads for c in cpu if c.option("world_size") == 2} == {1}  # 2 threads shared by 2 ranks
    assert [c.threads for c in cpu if c.option("parallel") == "single"] == [2]
    gpu = [c for c in cases if c.device == GPU]
    assert gpu and {c.option("dist_backend") for c in gpu} == {"nccl"}
    assert all("needs at least 2 GPUs: no CUDA device is available" in multigpu.gpu_rule(c) for c in gpu)
    assert multigpu.gpu_rule(cpu[0]) is None


def test_one_gpu_is_not_enough_and_the_cpu_form_runs_instead(monkeypatch):
    gpus(monkeypatch, 1)
    cases = multigpu.cases(StudyOptions(devices=(GPU,), quick=True))  # --device cuda
    assert [c for c in cases if c.device == "cpu"]
    assert "this machine has 1 GPU" in multigpu.gpu_rule(next(c for c in cases if c.device == GPU))


def test_eight_gpus_scale_ddp_over_1_2_4_8_and_split_two_columns(monkeypatch):
    gpus(monkeypatch, 8)
    quick = multigpu.cases(StudyOptions(devices=("cpu", GPU), quick=True))
    assert not [c for c in quick if c.device == "cpu"]  # the GPU form runs: no CPU form
    assert forms(quick, "cuda") == [("ddp", 1, 128), ("ddp", 2, 256), ("ddp", 4, 512), ("ddp", 8, 1024),
                                    ("single", 1, 128), ("two_column", 2, 128)]
    full = multigpu.cases(StudyOptions(devices=(GPU,)))
    strong = [c for c in full if c.option("parallel") == "ddp" and c.batch == 128 and c.option("world_size") > 1]
    assert sorted(c.option("world_size") for c in strong) == [2, 4, 8]
    assert {c.dtype for c in full if c.option("parallel") == "two_column"} == {"float32", "tf32"}
    assert all(multigpu.gpu_rule(c) is None for c in full)
    assert multigpu.gpu_world_sizes(6) == [1, 2, 4, 6] and multigpu.gpu_world_sizes(1) == [1, 2]
    keys = [c.key for c in full]
    assert len(keys) == len(set(keys))


def test_the_forms_knob_narrows_the_grid(monkeypatch):
    gpus(monkeypatch, 0)
    cases = multigpu.cases(StudyOptions(devices=("cpu",), quick=True, extra={"forms": ["two_column"]}))
    assert {c.option("parallel") for c in cases} == {"two_column"}


def _row(parallel, world, batch, time_s, device="cpu", dtype="float32", threads=None, error=1e-6):
    backend = "nccl" if device.startswith("cuda") else "gloo"
    case = Case(layer="network", device=device, dtype=dtype, batch=batch, pass_name="train_step", threads=threads,
                options=distributed.case_options(parallel, world, backend))
    return measured(case, time_s=time_s, threads=threads, options=json.dumps(dict(case.options)), error_rel=error)


def test_speedups_and_efficiencies_are_the_arithmetic_on_the_measured_rows():
    rows = frame([
        _row("single", 1, 2, 1.0, threads=2),  # 2 img/s
        _row("ddp", 2, 4, 1.0, threads=1),  # weak: 4 img/s over 2 ranks of 2 images
        _row("two_column", 2, 2, 0.8, threads=1),  # 2.5 img/s
        _row("single", 1, 128, 0.1, device=GPU),  # 1280 img/s
        _row("ddp", 2, 128, 0.06, device=GPU),  # strong: 2133 img/s
        _row("ddp", 4, 512, 0.1, device=GPU),  # weak (128 per rank): 5120 img/s
        measured(Case(layer="network", device=GPU, batch=128, pass_name="train_step",
                      options=distributed.case_options("two_column", 2, "nccl")), status="skipped",
                 note="needs 2 GPUs, one per rank; this machine has 1"),
    ])
    summary = multigpu.summarize(rows, StudyOptions(devices=("cpu", GPU)))
    table = {(r["kind"], r["parallel"], r["world"], r["batch"]): r for r in summary.data["rows"]}
    weak = table[("cpu", "ddp", 2, 4)]
    assert weak["scaling"] == "weak" and weak["per_rank"] == 2
    assert weak["speedup"] == pytest.approx(2.0) and weak["efficiency"] == pytest.approx(1.0)
    two = table[("cpu", "two_column", 2, 2)]
    assert two["per_rank"] == 2 and two["speedup"] == pytest.approx(1.25) and two["efficiency"] == pytest.approx(0.625)
    strong = table[("cuda", "ddp", 2, 128)]
    assert strong["scaling"] == "strong" and strong["speedup"] == pytest.approx(0.1 / 0.06)
    gpu_weak = table[("cuda", "ddp", 4, 512)]
    assert gpu_weak["scaling"] == "weak" and gpu_weak["speedup"] == pytest.approx(4.0)
    assert gpu_weak["efficiency"] == pytest.approx(1.0)
    assert len(summary.data["rows"]) == 6  # the skipped row is not a result
    text = summary.text
    assert "Two columns on cpu (float32): 1.25x the one-process step at batch 2" in text
    assert "needs 2 GPUs, one per rank" in text and "gloo" in text


def test_communication_counts_the_exchanges_and_the_gradients():
    comm = multigpu.communication("alexnet2012", batch=128)
    network = build_network("alexnet2012")
    per_image = sum(e["forward_elements"] + e["backward_elements"] for e in comm["two_column"])
    assert comm["two_column_bytes_per_step"] == per_image * 128 * 4
    assert comm["ddp_gradient_bytes_per_step"] == network.params * 4
