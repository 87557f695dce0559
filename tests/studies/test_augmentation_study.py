"""The augmentation study: its grids on machines with and without a GPU, and a summary that computes "can the CPU feed
the GPU?" from measured rows only."""
import json

import pytest

from perfkit.cases import AUGMENT, NETWORK, Case
from perfkit.study import StudyOptions
from perfkit.studies import augmentation

from study_helpers import cpu_machine, frame, gpu_machine, measured  # noqa: F401 (fixtures)

GPU = "cuda:0"


def test_cpu_only_grid_measures_the_cpu_and_plans_the_gpu_half_to_be_skipped(cpu_machine):
    cases = augmentation.cases(StudyOptions(devices=("cpu",), quick=True))
    cpu_aug = [c for c in cases if c.device == "cpu" and c.layer == AUGMENT]
    assert {c.threads for c in cpu_aug} == {1, None} and {c.backend for c in cpu_aug} == {"torch"}
    assert {c.batch for c in cpu_aug} == {128}
    assert all(c.option("input") == "uint8" and c.option("layout") == "nchw" for c in cpu_aug)
    [cpu_train] = [c for c in cases if c.device == "cpu" and c.layer == NETWORK]
    assert cpu_train.pass_name == "train_step" and cpu_train.batch == 4
    gpu = [c for c in cases if c.device == GPU]
    assert {(c.layer, c.backend) for c in gpu} == {(AUGMENT, "triton"), (AUGMENT, "torch"), (NETWORK, "torch")}
    assert {c.batch for c in gpu if c.layer == NETWORK} == {128}


def test_gpu_grid_sets_the_kernel_against_the_papers_train_step(gpu_machine):
    quick = augmentation.cases(StudyOptions(devices=("cpu", GPU), quick=True))
    assert not [c for c in quick if c.device == "cpu" and c.layer == NETWORK]  # the GPU's step is the comparison
    assert {c.threads for c in quick if c.device == "cpu"} == {1, None}  # the CPU side is the point: always
    train = [c for c in quick if c.layer == NETWORK]
    assert {(c.dtype, bool(c.option("autocast"))) for c in train} == {("float32", False), ("bfloat16", True)}
    full = augmentation.cases(StudyOptions(devices=(GPU,)))
    kernels = [c for c in full if c.backend == "triton"]
    assert len(kernels) == 4 and {c.option("layout") for c in kernels} == {"nchw", "channels_last"}
    assert {c.dtype for c in kernels} == {"float32", "bfloat16"} and {c.option("input") for c in kernels} == {
        "uint8", "float32"}
    assert {c.dtype for c in full if c.layer == NETWORK} == {"float32", "tf32", "bfloat16"}


def _aug(device, backend, time_s, threads=None, batch=128, status="ok", **fields):
    case = augmentation.augment_case("alexnet2012", backend, device, batch, threads=threads)
    return measured(case, status=status, time_s=time_s, threads=threads, layer_kind="augment",
                    options=json.dumps(dict(case.options)), **fields)


def _train(device, time_s, dtype="float32", batch=128, autocast=False, threads=None):
    case = Case(layer=NETWORK, device=device, dtype=dtype, batch=batch, pass_name="train_step", threads=threads,
                options=(("autocast", True),) if autocast else ())
    return measured(case, time_s=time_s, threads=threads, options=json.dumps(dict(case.options)))


def gpu_rows():
    """CPU 1000 img/s (1 thread) and 8000 (16 threads); GPU train step 2000 img/s (fp32) and 6000 (bf16 autocast);
    the kernel 100,000 img/s, torch on the GPU 20,000."""
    return frame([
        _aug("cpu", "torch", 0.128, threads=1),
        _aug("cpu", "torch", 0.016, threads=16),
        _aug(GPU, "triton", 0.00128),
        _aug(GPU, "torch", 0.0064),
        _train(GPU, 0.064),
        _train(GPU, 128 / 6000, dtype="bfloat16", autocast=True),
        # not ok: never a speed result
        _aug(GPU, "triton", None, status="incorrect", batch=64, note="error too large", images_per_s=1e9,
             time_median_s=1e-9),
    ])


def test_the_verdict_is_the_arithmetic_on_the_measured_rows():
    summary = augmentation.summarize(gpu_rows(), StudyOptions(devices=("cpu", GPU)))
    v = summary.data["verdict"]
    assert v["cpu_1t"] == pytest.approx(1000) and v["cpu_all"] == pytest.approx(8000) and v["cpu_all_threads"] == 16
    assert v["gpu_fp32"] == pytest.approx(2000) and v["gpu_fastest"] == pytest.approx(6000)
    assert v["gpu_fastest_config"] == "torch bf16 autocast"
    assert v["cores_needed_gpu_fp32"] == pytest.approx(2) and v["cpu_all_over_gpu_fp32"] == pytest.approx(4)
    assert v["cores_needed_gpu_fastest"] == pytest.approx(6)
    assert v["cpu_all_over_gpu_fastest"] == pytest.approx(8000 / 6000)
    assert v["kernel"] == pytest.approx(100_000) and v["kernel_over_gpu_torch"] == pytest.approx(5)
    assert v["kernel_share_gpu_fastest"] == pytest.approx(0.06)
    text = summary.text
    assert "the CPU keeps up" in text and "take 6 such cores" in text and "6% to the fastest train step" in text
    assert "computationally free" in text and "china.jpg" in text
    assert "1e+09" not in text and len(summary.data["augment"]) == 4  # the incorrect row is not a result


def test_the_verdict_moves_with_the_data():
    rows = gpu_rows()
    rows.loc[rows.layer == NETWORK, "images_per_s"] *= 10  # a GPU ten times faster
    v = augmentation.summarize(rows, StudyOptions(devices=("cpu", GPU))).data["verdict"]
    assert v["cores_needed_gpu_fastest"] == pytest.approx(60)
    assert v["cpu_all_over_gpu_fastest"] == pytest.approx(8000 / 60000)
    text = augmentation.summarize(rows, StudyOptions(devices=("cpu", GPU))).text
    assert "the CPU falls short" in text


def test_without_a_gpu_the_summary_says_the_comparison_needs_one():
    rows = frame([_aug("cpu", "torch", 0.128, threads=1), _aug("cpu", "torch", 0.256, threads=2),
                  _train("cpu", 2.0, batch=4, threads=2),
                  measured(augmentation.augment_case("alexnet2012", "triton", GPU, 128), status="skipped",
                           note="no CUDA device is available", layer_kind="augment")])
    summary = augmentation.summarize(rows, StudyOptions(devices=("cpu",)))
    v = summary.data["verdict"]
    assert v["gpu_fastest"] is None and v["cpu_train"] == pytest.approx(2.0)
    assert v["cpu_share"] == pytest.approx(2.0 / 500)
    text = summary.text
    assert "needs a GPU" in text and "no CUDA device is available" in text
    assert "2 threads augmented slower than 1" in text  # 500 img/s with 2 threads against 1000 with 1
