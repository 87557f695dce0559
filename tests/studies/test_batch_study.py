"""The batch study measures each sweep in increasing batch order and stops it at its first out-of-memory case (larger
batches are neither measured nor stored, also when a run resumes), and draws a GPU case's timed batch on the device.
No GPU is needed: out-of-memory is faked, and the device draw is checked by what make_inputs is asked for."""
from dataclasses import replace

import pytest
import torch

import perfkit.runner
import perfkit.workload
from perfkit.backends import get_backend
from perfkit.cases import NETWORK, Case
from perfkit.runner import calls_only_runner, case_row
from perfkit.specs import build_network
from perfkit.results.store import load_measurements
from perfkit.studies import batch
from perfkit.study import StudyOptions, run_study
from perfkit.workload import make_inputs

from study_helpers import FAST

GPU = "cuda:0"


def sweep_cases(pass_name, sizes, device=GPU):
    return [Case(layer=NETWORK, device=device, batch=b, pass_name=pass_name) for b in sizes]


def fake_measure(runner, oom_from: dict, measured: list):
    """runner.measure standing in for the GPU: an "oom" row (as perfkit.runner.failure_fields makes it) for a batch at
    or above `oom_from[pass_name]`, else "ok"; each measured case is appended to `measured`."""

    def measure(case):
        measured.append((case.pass_name, case.batch))
        row = case_row(case, runner.run_id, runner.study, runner.env_id, "network")
        if case.batch >= oom_from.get(case.pass_name, float("inf")):
            exc = torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 40.00 GiB")
            return replace(row, **perfkit.runner.failure_fields(exc))
        return replace(row, status="ok", time_median_s=0.01, images_per_s=case.batch / 0.01)

    return measure


def test_a_sweep_stops_at_its_first_out_of_memory_case(open_runner):
    runner = open_runner(FAST)
    measured = []
    runner.measure = fake_measure(runner, {"forward": 8}, measured)
    # two sweeps, given interleaved and out of order: each runs in increasing batch order, on its own
    cases = sweep_cases("forward", [64, 1, 2, 4, 8, 16, 32]) + sweep_cases("train_step", [4, 2, 1])
    rows = batch.run_cases(runner, cases)
    assert measured == [("forward", 1), ("forward", 2), ("forward", 4), ("forward", 8),
                        ("train_step", 1), ("train_step", 2), ("train_step", 4)]
    assert [(r.pass_name, r.batch, r.status) for r in rows if r.status == "oom"] == [("forward", 8, "oom")]
    stored = batch.stored_statuses(runner)
    assert not [k for k in stored if "/b16/" in k or "/b32/" in k or "/b64/" in k]  # not stored, not even skipped
    assert len(stored) == len(rows) == 7 and runner.cases_not_run == 0
    assert "work" not in vars(runner)  # the device-draw wrapper is gone once the study's cases are measured


def test_a_resumed_run_honours_the_out_of_memory_case_it_stored(open_runner):
    runner = open_runner(FAST)
    # an earlier attempt of this run stored batches 1 (ok) and 2 (oom), then was stopped
    for case, status in zip(sweep_cases("forward", [1, 2]), ("ok", "oom")):
        runner.store.add_measurement(replace(case_row(case, runner.run_id, runner.study, runner.env_id, "network"),
                                             status=status))
    measured = []
    runner.measure = fake_measure(runner, {}, measured)  # nothing would run out of memory now
    rows = batch.run_cases(runner, sweep_cases("forward", [1, 2, 4, 8]) + sweep_cases("train_step", [1, 2]))
    assert measured == [("train_step", 1), ("train_step", 2)]  # forward stays stopped at its stored oom
    assert len(rows) == 2


def test_cases_left_at_the_deadline_are_counted_for_the_rerun(open_runner):
    runner = open_runner(replace(FAST, deadline=0.0))  # already passed: nothing starts
    measured = []
    runner.measure = fake_measure(runner, {}, measured)
    assert batch.run_cases(runner, sweep_cases("forward", [1, 2, 4], device="cpu")) == []
    assert measured == [] and runner.cases_not_run == 3  # the sum over the per-case runner.run calls


def test_the_study_stores_the_oom_and_says_where_the_sweep_stopped(tmp_path, monkeypatch):
    """End to end on the CPU: the runner's own check-and-time path, whose timed batch of 2 or more fakes CUDA's
    out-of-memory error (the check's one image passes)."""
    drawn = perfkit.runner.make_inputs

    def make_inputs_or_oom(layers, n, seed, **kw):
        if n >= 2:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {n} GiB")
        return drawn(layers, n, seed, **kw)

    monkeypatch.setattr(perfkit.runner, "make_inputs", make_inputs_or_oom)
    options = StudyOptions(devices=("cpu",), quick=True, extra={"batches": [1, 2, 4, 8], "passes": ["forward"]})
    result = run_study(batch, options, tmp_path / "s.db", show_progress=False, config=FAST)
    df = load_measurements(tmp_path / "s.db")
    cpu = df[df.device == "cpu"]
    assert sorted(zip(cpu.batch, cpu.status)) == [(1, "ok"), (2, "oom")]
    # the GPU sweep this machine cannot run is stored as skipped, every size, with the reason
    assert set(df[df.device == GPU].status) == {"skipped"} and len(df[df.device == GPU]) == 4
    [sweep] = [s for s in result.summary.data["sweeps"] if s["device"] == "cpu"]
    assert sweep["first_oom"] == 2 and sweep["largest_fit"] == 1 and sweep["not_run"] == [4, 8]
    assert "stopped at batch 2, its first out of memory" in result.summary.text and "(4, 8)" in result.summary.text
    assert result.cases_not_run == 0 and result.rows_added == 6
    assert perfkit.runner.make_inputs is make_inputs_or_oom  # restored after the GPU-draw wrapper's use


def test_the_gpu_sweep_is_not_bounded_by_host_memory(monkeypatch):
    network = build_network("alexnet2012")
    monkeypatch.setattr(batch, "gpu_memory_bytes", lambda device: 141 * 10 ** 9)
    plans = []
    for host in (8 * 2 ** 30, 2 ** 40):
        monkeypatch.setattr(batch, "host_memory_bytes", lambda: host)
        plans.append(batch.sweep(network, "forward", "bfloat16", GPU, quick=False))
    assert plans[0] == plans[1] and "must run out of memory" in plans[0][1]


# -- inputs drawn on the device ---------------------------------------------------------------------------------------
def small_layers():
    return build_network("alexnet2012").span("fc8")


def test_make_inputs_on_the_cpu_is_unchanged():
    layers = small_layers()
    gen = torch.Generator().manual_seed(7)  # what make_inputs drew before it took a device
    want_x = torch.randn((3, *layers[0].in_shape), generator=gen)
    want_g = torch.randn((3, *layers[-1].out_shape), generator=gen)
    for device in (None, "cpu", torch.device("cpu")):
        got = make_inputs(layers, 3, 7, device=device)
        assert torch.equal(got["x"], want_x) and torch.equal(got["grad_output"], want_g)
    with_loss = build_network("alexnet2012").layers_for("train_step")
    assert torch.equal(make_inputs(with_loss, 2, 5)["target"], make_inputs(with_loss, 2, 5, device="cpu")["target"])


def test_make_inputs_for_a_gpu_draws_there_with_a_generator_of_its_own(monkeypatch):
    """Nothing of the batch is drawn on the host: the generator and every draw name the device (recorded here and run
    on the CPU, since this machine may have no GPU)."""
    asked = []
    real_generator, real_randn, real_randint = torch.Generator, torch.randn, torch.randint

    def generator(device="cpu"):
        asked.append(("generator", str(device)))
        return real_generator()

    def drawing(real, name):
        def draw(*args, device=None, **kw):
            asked.append((name, str(device)))
            return real(*args, **kw)
        return draw

    monkeypatch.setattr(torch, "Generator", generator)
    monkeypatch.setattr(torch, "randn", drawing(real_randn, "randn"))
    monkeypatch.setattr(torch, "randint", drawing(real_randint, "randint"))
    make_inputs(build_network("alexnet2012").layers_for("train_step"), 4, 3, device=GPU)
    assert asked == [("generator", GPU), ("randn", GPU), ("randint", GPU)]


@pytest.mark.parametrize("on_device", [True, False])
def test_the_runner_asks_for_the_timed_batch_on_the_device_and_the_check_on_the_cpu(monkeypatch, on_device):
    """With a case drawn on its device (a CPU stands in for the GPU here), the timed batch's make_inputs names the
    device; the check's does not. Without it, neither does."""
    calls = []
    real = perfkit.runner.make_inputs

    def recording(layers, n, seed, device=None):
        calls.append((n, device))
        return real(layers, n, seed, device=device)

    monkeypatch.setattr(perfkit.runner, "make_inputs", recording)
    monkeypatch.setattr(perfkit.runner, "timed_inputs_device", lambda case: "cpu" if on_device else None)
    runner = calls_only_runner(replace(FAST, check_batch=1))
    work = runner.work(Case(layer="fc8", device="cpu", batch=4, pass_name="forward"), get_backend("torch"))
    assert work.check().error < 1e-4
    run, _ = work.timed()
    run()
    assert calls == [(1, None), (4, "cpu" if on_device else None)]


def test_gpu_cases_draw_their_timed_inputs_on_their_gpu():
    assert perfkit.runner.timed_inputs_device(Case(layer="fc8", device="cuda:1")) == "cuda:1"
    assert perfkit.runner.timed_inputs_device(Case(layer="fc8", device="cpu")) is None
