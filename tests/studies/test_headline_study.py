"""The headline study: its cases in value order (what a short budget keeps comes first), and a summary whose figures
are the arithmetic on the measured rows."""
import pytest

from perfkit.cases import Case
from perfkit.app.published import figure
from perfkit.study import StudyOptions
from perfkit.studies import headline

from study_helpers import frame, measured

GPU = "cuda:0"
NET = dict(variant="alexnet2012", layer="network", device=GPU, batch=128)


def test_cases_come_in_value_order_eager_and_triton_then_cpu_then_compile_then_kernelbench():
    cases = headline.cases(StudyOptions(devices=("cpu", GPU)))
    kinds = []
    for case in cases:
        kind = "cpu" if case.device == "cpu" else "kernelbench" if case.variant == "kernelbench" else \
            "compile" if case.backend == "compile" else "eager/triton"
        if not kinds or kinds[-1] != kind:
            kinds.append(kind)
    assert kinds == ["eager/triton", "cpu", "compile", "kernelbench"]
    gpu = [c for c in cases if c.device == GPU and c.variant == "alexnet2012"]
    assert len(gpu) == 3 * 3 * 2 and {c.batch for c in gpu} == {128}
    assert {(c.backend, c.dtype, c.pass_name) for c in gpu} == {
        (b, d, p) for b in ("torch", "triton", "compile") for d in ("float32", "tf32", "bfloat16")
        for p in ("forward", "train_step")}
    assert gpu[0].dtype == "bfloat16" and gpu[0].pass_name == "train_step"
    kb = [c for c in cases if c.variant == "kernelbench"]
    assert {c.batch for c in kb} == {1024} and {c.backend for c in kb} == {"torch", "compile"}
    assert all(c.pass_name == "forward" for c in kb)
    assert len({c.key for c in cases}) == len(cases)


def test_the_energy_form_puts_train_steps_first_and_leaves_kernelbench_out():
    cases = headline.cases(StudyOptions(devices=("cpu", GPU), extra={"energy": True}))
    gpu = [c for c in cases if c.device == GPU]
    assert all(c.variant == "alexnet2012" for c in cases)
    assert [c.pass_name for c in gpu[:9]] == ["train_step"] * 9
    assert cases[-1].device == "cpu"


def test_summary_speedups_and_cpu_ratio_are_the_arithmetic_on_the_rows():
    rows = [measured(Case(backend="torch", dtype="bfloat16", pass_name="train_step", **NET), time_s=0.040),
            measured(Case(backend="triton", dtype="bfloat16", pass_name="train_step", **NET), time_s=0.050),
            measured(Case(backend="compile", dtype="bfloat16", pass_name="train_step", **NET), time_s=0.032),
            measured(Case(backend="triton", dtype="float32", pass_name="forward", **NET), status="incorrect",
                     time_median_s=0.001, note="error too large"),
            measured(Case(variant="alexnet2012", layer="network", device="cpu", batch=32, pass_name="train_step"),
                     time_s=3.2, threads=16),
            measured(Case(variant="kernelbench", layer="network", device=GPU, batch=1024, backend="compile"),
                     time_s=0.0167 / 2)]
    summary = headline.summarize(frame(rows), StudyOptions(devices=("cpu", GPU)))
    [row] = summary.data["headline"]
    assert row["triton_x"] == pytest.approx(0.8) and row["compile_x"] == pytest.approx(1.25)
    assert row["eager_img_s"] == pytest.approx(3200)
    ratios = {r["config"]: r["x"] for r in summary.data["gpu_vs_cpu"]}
    assert ratios["torch bf16"] == pytest.approx(3200 / 10) and ratios["compile bf16"] == pytest.approx(4000 / 10)
    assert not any("triton fp32" in k for k in ratios)  # the incorrect row is never a speed result
    [kb] = summary.data["kernelbench"]
    assert kb["published_ms"] == figure("kernelbench_h100_compile_ms").value and kb["ratio"] == pytest.approx(2.0)
    assert "1 incorrect" in summary.text and "0.80x" in summary.text and "1.25x" in summary.text
