"""The grids each study plans, quick and full, on the CPU and on a GPU. Planning runs nothing, so the GPU forms are
checked here on any machine: they are what a GPU machine will run."""
import pytest

from perfkit.cases import AUGMENT, NETWORK
from perfkit.specs import build_network
from perfkit.study import StudyOptions
from perfkit.studies import (CPU_DEFAULT_STUDIES, GPU_DEFAULT_STUDIES, STUDIES, backends, baseline, batch,
                             default_studies,
                             energy, precision, roofline, speedup2012, train_time)
from perfkit.studies import _common

from study_helpers import cpu_machine, gpu_machine  # noqa: F401 (fixtures)

LAYERS = list(build_network("alexnet2012").layer_names)
GEMMS = [s.name for s in build_network("alexnet2012").layers if s.kind in ("conv", "linear")]
GPU_ONLY = StudyOptions(devices=("cuda:0",))
BOTH = StudyOptions(devices=("cpu", "cuda:0"))


def opts(devices=("cpu", "cuda:0"), **kw):
    return StudyOptions(devices=devices, **kw)


def test_default_studies_follow_the_hardware():
    assert default_studies(("cpu",)) == CPU_DEFAULT_STUDIES == ("baseline",)
    assert default_studies(("cpu", "cuda:0")) == GPU_DEFAULT_STUDIES
    assert set(GPU_DEFAULT_STUDIES) == set(STUDIES) - {"baseline"}


@pytest.mark.parametrize("name", sorted(STUDIES))
@pytest.mark.parametrize("quick", [True, False])
def test_every_grid_has_unique_keys_and_known_layers(name, quick, cpu_machine):
    for devices in (("cpu",), ("cpu", "cuda:0")):
        cases = STUDIES[name].cases(opts(devices, quick=quick))
        keys = [c.key for c in cases]
        assert cases and len(keys) == len(set(keys)), name
        for case in cases:  # every layer (or run of layers, "conv1+tanh1") exists in the case's own network
            if case.layer not in (NETWORK, AUGMENT):
                assert build_network(case.variant, case.activation).span(case.layer), case


def test_device_planning(cpu_machine, monkeypatch):
    # no GPU on this machine: the GPU half is planned anyway, to be stored as skipped with the reason
    assert _common.plan_devices(opts(("cpu",)), cpu="alone") == (["cpu"], ["cuda:0"])
    monkeypatch.setattr(_common, "gpu_visible", lambda: True)
    # a GPU exists but --device cpu: CPU only
    assert _common.plan_devices(opts(("cpu",)), cpu="alone") == (["cpu"], [])
    # auto on a GPU machine: GPU-centred studies measure the GPU; speedup2012 always measures the CPU
    assert _common.plan_devices(BOTH, cpu="alone") == ([], ["cuda:0"])
    assert _common.plan_devices(BOTH, cpu="asked") == (["cpu"], ["cuda:0"])
    assert _common.plan_devices(GPU_ONLY, cpu="always") == (["cpu"], ["cuda:0"])


def test_speedup2012_grids(gpu_machine):
    full = speedup2012.cases(BOTH)
    cpu = [c for c in full if c.device == "cpu"]
    gpu = [c for c in full if c.device == "cuda:0"]
    assert {c.threads for c in cpu} == {1, None} and {c.batch for c in cpu} == {32}
    assert {(c.backend, c.dtype) for c in gpu} == set(speedup2012.GPU_CONFIGS) and {c.batch for c in gpu} == {128}
    for part in (cpu, gpu):
        assert {c.layer for c in part} == set(LAYERS) | {NETWORK}
        assert {c.pass_name for c in part} == {"forward", "train_step"}
    # every CPU baseline on 1 thread and all; ONNX Runtime has a forward pass only
    per_layer = 2 * (len(_common.CPU_BASELINES) + len(_common.CPU_BASELINES) - 1)
    assert len(cpu) == per_layer * (len(LAYERS) + 1) and len(gpu) == 6 * 2 * (len(LAYERS) + 1)
    assert {c.backend for c in cpu} == set(_common.CPU_BASELINES) and {c.dtype for c in cpu} == {"float32"}
    assert not [c for c in cpu if c.backend == "onnxruntime" and c.pass_name != "forward"]
    # side by side: the baselines of one layer, pass and thread count follow each other
    assert [c.backend for c in cpu[:4]] == list(_common.CPU_BASELINES)
    assert len({(c.layer, c.pass_name, c.threads) for c in cpu[:4]}) == 1
    quick = speedup2012.cases(opts(("cpu",), quick=True))
    assert {c.layer for c in quick} == set(GEMMS) | {NETWORK} and {c.batch for c in quick} == {4}
    assert {c.batch for c in speedup2012.cases(opts(quick=True, batch=8))} == {8}


def test_baseline_sets_the_cpu_baselines_beside_stock_eager(cpu_machine):
    quick = baseline.cases(opts(("cpu",), quick=True))
    others = [c for c in quick if c.backend != "torch"]
    assert {c.layer for c in others} == set(baseline.QUICK_BASELINE_LAYERS)
    assert {c.backend for c in others} == {"channels_last", "compile", "onnxruntime"}
    assert {c.threads for c in others} == {1, None}
    # compiling the whole train step takes minutes on a small CPU: not in the quick start, unless layers are named
    assert not [c for c in others if c.backend == "compile" and c.layer == NETWORK and c.pass_name == "train_step"]
    named = baseline.cases(opts(("cpu",), quick=True, extra={"baseline_layers": ["network"]}))
    assert [c for c in named if c.backend == "compile" and c.pass_name == "train_step"]
    # stock eager still covers every layer at the study's thread count
    stock = {(c.layer, c.pass_name) for c in quick if c.backend == "torch" and c.threads is None}
    assert stock == {(name, p) for name in list(LAYERS) + [NETWORK] for p in baseline.PASSES}
    full = baseline.cases(opts(("cpu",)))
    assert {c.layer for c in full if c.backend == "compile"} == set(GEMMS) | {NETWORK}
    assert not [c for c in baseline.cases(GPU_ONLY) if c.backend != "torch"]  # the GPU keeps stock eager


def test_backends_grids(gpu_machine):
    full = backends.cases(GPU_ONLY)
    assert {c.dtype for c in full} == {"float32", "tf32", "float16", "bfloat16"}
    assert {c.pass_name for c in full} == {"forward", "backward", "train_step"}
    assert {c.batch for c in full if c.backend == "compile"} == {128}
    assert {c.batch for c in full if c.backend != "compile"} == {32, 128}
    assert {c.layer for c in full} == set(LAYERS) | {NETWORK}
    quick = backends.cases(StudyOptions(devices=("cuda:0",), quick=True))
    assert {c.dtype for c in quick} == {"float32", "bfloat16"}
    assert {c.layer for c in quick} == set(backends.QUICK_LAYERS)


def test_backends_quick_cpu_grid_leaves_out_compiling_the_whole_train_step(cpu_machine):
    cpu = [c for c in backends.cases(opts(("cpu",), quick=True)) if c.device == "cpu"]
    assert {c.layer for c in cpu} == set(backends.QUICK_LAYERS)
    assert not [c for c in cpu if c.backend == "compile" and c.layer == NETWORK and c.pass_name == "train_step"]
    assert [c for c in cpu if c.backend == "torch" and c.layer == NETWORK and c.pass_name == "train_step"]


def test_batch_sweep_on_a_gpu_goes_to_a_size_that_must_run_out_of_memory_on_an_80_gb_card(monkeypatch, gpu_machine):
    monkeypatch.setattr(batch, "host_memory_bytes", lambda: 128 * 2 ** 30)
    monkeypatch.setattr(batch, "gpu_memory_bytes", lambda device: 80 * 10 ** 9)
    network = build_network("alexnet2012")
    sizes, why = batch.sweep(network, "train_step", "float32", "cuda:0", quick=False)
    assert sizes[0] == 1 and all(b == 2 * a for a, b in zip(sizes, sizes[1:]))
    assert batch.memory_lower_bound(network, "train_step", sizes[-1], "float32") > 80 * 2 ** 30
    assert batch.memory_lower_bound(network, "train_step", sizes[-2], "float32") <= 80 * 2 ** 30
    assert "must run out of memory" in why
    # a float32 forward needs little memory per image, and its inputs are drawn on the GPU: host memory sets no limit
    fwd, why = batch.sweep(network, "forward", "float32", "cuda:0", quick=True)
    assert "must run out of memory" in why and "host memory" not in why
    assert batch.memory_lower_bound(network, "forward", fwd[-1], "float32") > 80 * 2 ** 30
    cases = batch.cases(GPU_ONLY)
    assert {c.dtype for c in cases} == {"float32", "bfloat16"} and {c.layer for c in cases} == {NETWORK}


def test_batch_sweep_on_the_cpu_is_bounded(cpu_machine):
    network = build_network("alexnet2012")
    assert batch.sweep(network, "train_step", "float32", "cpu", quick=True)[0] == [1, 2, 4, 8]
    assert batch.sweep(network, "train_step", "float32", "cpu", quick=False)[0][-1] <= 64


def test_precision_uses_autocast_for_torch_and_native_dtypes_for_triton(gpu_machine):
    cases = precision.cases(GPU_ONLY)
    torch_low = [c for c in cases if c.backend == "torch" and c.dtype in ("float16", "bfloat16")]
    triton = [c for c in cases if c.backend == "triton"]
    assert torch_low and all(c.option("autocast") for c in torch_low)
    assert {c.dtype for c in triton} == {"float32", "tf32", "float16", "bfloat16"}
    assert not any(c.option("autocast") for c in triton)


def test_the_energy_study_keeps_the_energy_window_in_its_quick_form(monkeypatch, tmp_path):
    """--quick skips the sustained energy window (perfkit.study.QUICK_ENERGY), except in the energy study
    (Study.quick_energy)."""
    import perfkit.study

    seen = {}

    class Stop(Exception):
        pass

    def fake_runner(store, run_id, study, env, env_id, config, show_progress=True, measure_hook=None,
                    after_case=None):
        seen[study] = config.energy
        raise Stop

    monkeypatch.setattr(perfkit.study, "Runner", fake_runner)
    for module in (energy, roofline):
        with pytest.raises(Stop):
            perfkit.study.run_study(module.STUDY, opts(("cpu",), quick=True), tmp_path / "s.db", show_progress=False)
    assert seen == {"energy": True, "roofline": False}


def test_roofline_covers_every_layer(gpu_machine):
    cases = roofline.cases(GPU_ONLY)
    assert {c.layer for c in cases} == set(LAYERS) | {NETWORK}
    assert {c.dtype for c in cases} == {"float32", "tf32", "bfloat16"}


def test_train_time_measures_the_network_train_step_at_the_papers_batch_on_the_gpu(gpu_machine):
    cases = train_time.cases(BOTH)
    assert {(c.layer, c.pass_name) for c in cases} == {(NETWORK, "train_step")}
    assert {c.batch for c in cases if c.device == "cuda:0"} == {128}
    assert ("torch", "float32") in {(c.backend, c.dtype) for c in cases if not c.option("autocast")}
    assert {c.threads for c in cases if c.device == "cpu"} == {None, 1}
