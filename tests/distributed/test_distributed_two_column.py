"""The paper's two-column model on 2 gloo processes computes exactly the single-process network: same logits, loss and
parameter gradients, in float64 (launched with torchrun, as the multigpu study does). Also the split itself (which part
of each parameter a column holds, where the columns communicate) and the parent's bookkeeping around torchrun."""
import json

import pytest
import torch

from perfkit.workloads import distributed as D
from perfkit.cases import Case
from perfkit.support.procgroup import GroupResult
from perfkit.runner import RunnerConfig
from perfkit.specs import build_network
from perfkit.results.store import Store, load_measurements

NETWORK = build_network("alexnet2012")

needs_gloo = pytest.mark.skipif(not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
                                reason="needs torch.distributed with gloo")


@needs_gloo
def test_two_gloo_columns_give_the_single_process_outputs_and_gradients(tmp_path):
    """One torchrun launch of 2 CPU processes (batch 2, float64): the two-column model and DDP against the
    single-process network; and, as a control, the two-column model without the LRN halo exchange, which must
    differ (so the comparison would catch a wrong split)."""
    out = tmp_path / "check.json"
    result = D.launch(2, ["check", "--forms", "two_column,ddp", "--control", "--batch", "2", "--dtype", "float64",
                          "--threads", "1", "--out", str(out)], echo=False)
    assert result.returncode == 0 and not result.timed_out, result.output
    result = json.loads(out.read_text())
    assert result["world_size"] == 2 and result["backend"] == "gloo" and result["dtype"] == "float64"
    names = {"logits", "loss"} | {f"{name}.grad" for name in NETWORK_PARAMETER_NAMES}
    for form in ("two_column", "ddp"):
        errors = result["errors"][form]
        assert set(errors) == names, form
        assert max(errors.values()) < 1e-12, (form, errors)
    control = result["errors"]["two_column_without_halo"]
    assert control["logits"] > 1e-7 and max(control.values()) > 1e-4


NETWORK_PARAMETER_NAMES = [f"{spec.name}.{p}" for spec in NETWORK.layers for p in spec.param_shapes]


def test_each_column_holds_half_of_every_layers_kernels():
    from perfkit.model import init_parameters

    params = init_parameters(NETWORK)
    for name, tensor in params.items():
        halves = [D.column_shard(tensor, r, 2) for r in range(2)]
        assert torch.equal(torch.cat(halves, 0), tensor)
        assert halves[0].shape[0] * 2 == tensor.shape[0]
    # conv2's column r is exactly its group r: 128 kernels over the 48 maps of conv1's column r
    conv2 = NETWORK.layer("conv2")
    assert conv2.groups == 2 and D.column_shard(params["conv2.weight"], 1, 2).shape == (128, 48, 5, 5)
    assert D.column_shard(params["conv3.weight"], 0, 2).shape == (192, 256, 3, 3)  # conv3 sees all 256 maps
    assert D.column_shard(params["fc6.weight"], 1, 2).shape == (2048, 9216)


def test_the_columns_communicate_where_the_paper_says_and_at_the_lrn_halos():
    plan = {spec.name if spec else "output": step for spec, step in D.column_plan(NETWORK.layers, 2) if step}
    # conv1's input, the image, enters both columns whole (it needs no gradient, so nothing is exchanged for it)
    assert plan == {"conv1": "enter", "lrn1": "halo", "lrn2": "halo", "conv3": "gather", "fc6": "gather",
                    "fc7": "gather", "fc8": "gather", "loss": "gather_logits"}
    body = {spec.name if spec else "output": step for spec, step in D.column_plan(NETWORK.body, 2) if step}
    assert body["output"] == "gather_logits" and "loss" not in body
    exchanges = {e["before"]: e for e in D.two_column_exchanges(NETWORK)}
    assert exchanges["conv3"]["forward_elements"] == 256 * 13 * 13
    assert exchanges["fc6"]["forward_elements"] == 256 * 6 * 6
    assert exchanges["fc8"]["backward_elements"] == 4096
    assert exchanges["loss"]["forward_elements"] == 1000 and exchanges["loss"]["backward_elements"] == 0
    assert exchanges["lrn1"]["forward_elements"] == 4 * 55 * 55  # 2 maps each side of the boundary
    # the other variants have no groups: every convolution after the first gathers its input
    owt = {spec.name: step for spec, step in D.column_plan(build_network("owt").layers, 2) if spec and step}
    assert owt["conv2"] == "gather" and owt["conv5"] == "gather"
    assert D.two_column_reason(NETWORK, 4) is not None and D.two_column_reason(NETWORK, 2) is None


def _case(parallel, world, device="cpu", batch=2, **kw):
    backend = "nccl" if device.startswith("cuda") else "gloo"
    return Case(layer="network", pass_name="train_step", device=device, batch=batch,
                options=D.case_options(parallel, world, backend), **kw)


def test_unavailable_reasons():
    assert D.unavailable_reason(_case("two_column", 2)) is None
    assert "exactly 2 ranks" in D.unavailable_reason(_case("two_column", 4, batch=4))
    assert "does not split evenly" in D.unavailable_reason(_case("ddp", 2, batch=3))
    forward = Case(pass_name="forward", options=D.case_options("ddp", 1, "gloo"))
    assert "train_step only" in D.unavailable_reason(forward)
    assert "world size 1" in D.unavailable_reason(_case("single", 2))
    assert "NCCL runs on CUDA" in D.unavailable_reason(Case(layer="network", pass_name="train_step",
                                                            options=D.case_options("ddp", 1, "nccl")))
    if not torch.cuda.is_available():
        assert "no CUDA device" in D.unavailable_reason(_case("ddp", 2, device="cuda:0"))
    key = _case("two_column", 2).key
    assert "dist_backend=gloo/parallel=two_column/world_size=2" in key


@pytest.fixture
def runner(open_runner):
    return open_runner(RunnerConfig(check_batch=1))


def test_a_failed_launch_records_the_case_in_flight_and_relaunches_the_rest(runner, monkeypatch):
    """Without starting processes: the fake torchrun stores the first case's row, then dies of out-of-memory in the
    second; the parent records the second as oom with the workers' output, launches again for the third, which
    succeeds; a case that cannot run here is skipped without a launch."""
    from dataclasses import replace

    from perfkit.runner import case_row

    cases = [_case("single", 1), _case("single", 1, batch=4), _case("single", 1, batch=8), _case("ddp", 2, batch=3)]
    launches = []

    def fake_launch(nproc, args, threads=1, echo=True, timeout_s=None):
        assert timeout_s is None  # no deadline: no timeout
        job = json.loads(open(args[args.index("--job") + 1]).read())
        launches.append([c["batch"] for c in job["cases"]])
        with Store.open(job["store"]) as store:
            for d in job["cases"]:
                case = D.case_from_dict(d)
                if case.batch == 4:
                    return GroupResult(1, False, 1.0, "Traceback ...\ntorch.OutOfMemoryError: out of memory (fake)\n")
                store.add_measurement(replace(case_row(case, job["run_id"], job["study"], job["env_id"], "network"),
                                              status="ok", time_median_s=1.0, images_per_s=float(case.batch)))
        return GroupResult(0, False, 1.0, "")

    monkeypatch.setattr(D, "launch", fake_launch)
    rows = D.measure_cases(runner, cases)
    assert launches == [[2, 4, 8], [8]]
    by_batch = {r.batch: r for r in rows}
    assert by_batch[2].status == "ok" and by_batch[8].status == "ok"
    assert by_batch[4].status == "oom" and "OutOfMemoryError" in by_batch[4].note
    assert by_batch[3].status == "skipped" and "does not split evenly" in by_batch[3].note
    df = load_measurements(runner.store.path)
    assert len(df) == 4 and df.case_key.is_unique
    # rerunning resumes: nothing left to launch
    launches.clear()
    assert D.measure_cases(runner, cases) == [] and launches == []
