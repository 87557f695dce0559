"""Summaries compute from measured rows only: fed rows whose times the test sets, the derived figures equal the
arithmetic on those times, move when the times move, ignore rows that are not 'ok', and cite the published figures
they compare against with their sources. The harness columns (energy, ceilings) are exercised here too, since the CPU
machine that runs the tests cannot produce them."""
import pytest

from perfkit.cases import Case
from perfkit.app.published import FIGURES, figure
from perfkit.specs import build_network
from perfkit.results.store import Store
from perfkit.study import StudyOptions
from perfkit.studies import backends, batch, energy, precision, roofline, speedup2012, train_time

from study_helpers import frame, measured

OPTIONS = StudyOptions(devices=("cpu", "cuda:0"))
GPU = "cuda:0"


# -- speedup2012 ------------------------------------------------------------------------------------------------------
def speedup_rows(gpu_fp32_s=0.5, gpu_bf16_s=0.1, cpu_1t_s=2.0, cpu_all_s=1.0):
    net = dict(layer="network", pass_name="train_step")
    return [
        measured(Case(device="cpu", batch=4, threads=1, **net), time_s=cpu_1t_s, threads=1),
        measured(Case(device="cpu", batch=4, **net), time_s=cpu_all_s, threads=16),
        measured(Case(device=GPU, batch=128, dtype="float32", **net), time_s=gpu_fp32_s),
        measured(Case(device=GPU, batch=128, dtype="bfloat16", **net), time_s=gpu_bf16_s),
        # not ok: never a speed result, whatever numbers it carries
        measured(Case(device=GPU, batch=128, backend="triton", dtype="float32", **net), status="incorrect",
                 time_median_s=0.001, images_per_s=128_000.0, note="error too large"),
        measured(Case(device=GPU, batch=128, backend="triton", dtype="bfloat16", **net), status="skipped",
                 note="the triton backend has no train_step pass yet"),
    ]


@pytest.fixture
def measured_speedup_rows():
    """Whole-network train_step rows with chosen times: CPU 2 img/s (1 thread) and 4 img/s (16 threads); GPU fp32
    256 img/s, bf16 1280 img/s."""
    return frame(speedup_rows())


def test_speedup_figures_are_the_arithmetic_on_the_measured_rows(measured_speedup_rows):
    summary = speedup2012.summarize(measured_speedup_rows, OPTIONS)
    [row] = [r for r in summary.data["rows"] if r["layer"] == "network"]
    assert row["cpu_1t_images_per_s"] == pytest.approx(4 / 2.0)
    assert row["cpu_all_images_per_s"] == pytest.approx(4 / 1.0)
    assert row["thread_gain"] == pytest.approx(2.0)
    assert row["torch fp32_vs_1t"] == pytest.approx((128 / 0.5) / (4 / 2.0)) == pytest.approx(128)
    assert row["torch fp32_vs_all"] == pytest.approx(64)
    assert row["torch bf16_vs_all"] == pytest.approx((128 / 0.1) / 4)
    assert row["triton fp32_images_per_s"] is None and row["triton fp32_vs_all"] is None  # incorrect: not a result
    assert summary.data["cpu"]["threads_all"] == 16
    text = summary.text
    assert "128x one CPU thread and 64x all 16 threads" in text
    assert "2x the throughput of 1 thread" in text


def test_speedup_moves_with_the_data():
    fast = speedup2012.summarize(frame(speedup_rows(gpu_fp32_s=0.25, cpu_all_s=0.5)), OPTIONS)
    [row] = [r for r in fast.data["rows"] if r["layer"] == "network"]
    assert row["torch fp32_vs_1t"] == pytest.approx(256)
    assert row["torch fp32_vs_all"] == pytest.approx(64)  # both sides twice as fast
    assert row["thread_gain"] == pytest.approx(4)


def test_speedup_summary_cites_the_published_ratios_with_their_sources(measured_speedup_rows):
    summary = speedup2012.summarize(measured_speedup_rows, OPTIONS)
    text = summary.text
    for key in ("claim_gpu_vs_cpu_speedup", "convnet_benchmarks_cpu_vs_cudnn", "matconvnet_gpu_vs_cpu",
                "cnn_benchmarks_gpu_vs_cpu", "paper_training_days"):
        assert FIGURES[key].source in text, key
    assert "100x" in text and "60.7x" in text and "8.73x / 12x" in text and "49-74x" in text
    ours = [r for r in summary.data["comparisons"] if r["source"] == "measured in this run"]
    assert ours[0]["ratio"] == "128x / 64x"


def test_speedup_without_gpu_rows_says_so_and_computes_nothing_gpu():
    rows = [r for r in speedup_rows() if r["device"] == "cpu"]
    summary = speedup2012.summarize(frame(rows), OPTIONS)
    assert "no GPU-vs-CPU ratio" in summary.text
    assert not [r for r in summary.data["comparisons"] if r["source"] == "measured in this run"]


def cpu_baseline_speedup_rows():
    """Stock eager 4 img/s on 16 threads (2 on 1); channels_last 5, compile 8 on 16 threads; ONNX Runtime forward
    only; the GPU in fp32 256 img/s."""
    net = dict(layer="network", pass_name="train_step")
    return speedup_rows() + [
        measured(Case(device="cpu", batch=4, backend="channels_last", **net), time_s=0.8, threads=16),
        measured(Case(device="cpu", batch=4, backend="compile", **net), time_s=0.5, threads=16),
        measured(Case(device="cpu", batch=4, backend="compile", threads=1, **net), time_s=1.0, threads=1),
        # not ok: never the best, whatever its time
        measured(Case(device="cpu", batch=4, backend="channels_last", threads=1, **net), status="error",
                 time_median_s=0.01, images_per_s=400.0, note="boom"),
    ]


def test_speedup_range_runs_from_stock_eager_to_the_best_cpu_configuration_which_it_names():
    summary = speedup2012.summarize(frame(cpu_baseline_speedup_rows()), OPTIONS)
    [row] = [r for r in summary.data["rows"] if r["layer"] == "network"]
    assert row["cpu_best_config"] == "torch.compile (C++) 16t" and row["cpu_best_images_per_s"] == pytest.approx(8)
    assert row["torch fp32_vs_all"] == pytest.approx(64)  # over stock eager on all threads, as before
    assert row["torch fp32_vs_best"] == pytest.approx(256 / 8)
    assert row["torch bf16_vs_best"] == pytest.approx(1280 / 8)
    [baselines] = [r for r in summary.data["cpu_baselines"] if r["layer"] == "network"]
    ratios = {(c["backend"], c["threads"]): c["vs_stock"] for c in baselines["configs"]}
    assert ratios == {("torch", 1): 1.0, ("compile", 1): pytest.approx(2.0), ("torch", 16): 1.0,
                      ("channels_last", 16): pytest.approx(5 / 4), ("compile", 16): pytest.approx(2.0)}
    assert baselines["best"]["vs_stock_all"] == pytest.approx(2.0)
    text = summary.text
    assert "CPU baselines, float32, batch 4" in text and "torch.compile (C++) 16t" in text
    assert "64x stock eager on all 16 threads and 32x the best CPU configuration (torch.compile (C++) 16t)" in text


def test_the_best_cpu_configuration_moves_with_the_data():
    rows = cpu_baseline_speedup_rows()
    for r in rows:
        if r["backend"] == "channels_last" and r["status"] == "ok":
            r.update(time_median_s=0.25, images_per_s=16.0)
    summary = speedup2012.summarize(frame(rows), OPTIONS)
    [row] = [r for r in summary.data["rows"] if r["layer"] == "network"]
    assert row["cpu_best_config"] == "eager channels_last 16t" and row["torch fp32_vs_best"] == pytest.approx(16)


def test_baseline_summary_names_the_fastest_cpu_configuration():
    from perfkit.studies import baseline

    net = dict(layer="network", pass_name="forward", device="cpu", batch=8)
    rows = frame([measured(Case(**net), time_s=1.0, threads=2),
                  measured(Case(backend="onnxruntime", **net), time_s=0.5, threads=2),
                  measured(Case(backend="compile", **net), time_s=0.8, threads=2),
                  measured(Case(threads=1, **net), time_s=1.6, threads=1)])
    summary = baseline.summarize(rows, StudyOptions(devices=("cpu",), quick=True))
    assert "the fastest CPU configuration is ONNX Runtime 2t, 2x stock eager NCHW on all threads" in summary.text
    [stock] = [r for r in summary.data["devices"]["cpu"]["rows"] if r["layer"] == "network"]
    assert stock["forward_s"] == 1.0  # the per-layer table is stock eager on all threads


# -- train_time -------------------------------------------------------------------------------------------------------
def train_rows(gpu_s=0.2, cpu_s=2.0):
    net = dict(layer="network", pass_name="train_step")
    return [measured(Case(device=GPU, batch=128, **net), time_s=gpu_s),
            measured(Case(device="cpu", batch=4, **net), time_s=cpu_s, threads=2),
            measured(Case(device=GPU, batch=128, dtype="tf32", **net), status="incorrect", images_per_s=1e6,
                     note="error too large"),
            measured(Case(device=GPU, batch=128, backend="triton", **net), status="skipped", note="no train_step")]


@pytest.fixture
def measured_train_rows():
    """A GPU train step of 128 images in 0.2 s (640 img/s) and a CPU one of 4 images in 2 s (2 img/s)."""
    return frame(train_rows())


def test_train_time_projects_days_from_the_measured_rows(measured_train_rows):
    summary = train_time.summarize(measured_train_rows, OPTIONS)
    rows = {r["device"]: r for r in summary.data["projections"]}
    assert set(rows) == {GPU, "cpu"}  # the incorrect and skipped rows project nothing
    images = 90 * 1.2e6
    assert summary.data["schedule_images"] == images
    assert rows[GPU]["images_per_s"] == pytest.approx(640)
    assert rows[GPU]["days"] == pytest.approx(images / 640 / 86_400)
    assert rows["cpu"]["days"] == pytest.approx(images / 2 / 86_400)
    assert rows[GPU]["vs_paper"] == pytest.approx([5 / rows[GPU]["days"], 6 / rows[GPU]["days"]])
    assert f"{images / 640 / 86_400:,.2f}" in summary.text
    slower = train_time.summarize(frame(train_rows(gpu_s=0.4)), OPTIONS)
    assert slower.data["projections"][0]["days"] == pytest.approx(2 * rows[GPU]["days"])


def test_gtx580_bound_is_the_roofline_arithmetic_on_the_cost_model():
    bound = train_time.gtx580_bound()
    peak, bandwidth = 1.581e12, 192.4e9
    step = sum(max(spec.cost("train_step", 128, "float32").flops / peak,
                   spec.cost("train_step", 128, "float32").bytes_min / bandwidth)
               for spec in build_network("alexnet2012").layers)
    assert bound["one_card_step_s"] == pytest.approx(step)
    assert bound["two_card_step_s"] == pytest.approx(step / 2)
    assert bound["two_card_images_per_s"] == pytest.approx(128 / (step / 2))
    assert bound["two_card_days"] == pytest.approx(90 * 1.2e6 / (128 / (step / 2)) / 86_400)
    paper = (90 * 1.2e6 / (6 * 86_400), 90 * 1.2e6 / (5 * 86_400))
    assert bound["paper_fraction_of_bound"] == pytest.approx([paper[0] * step / 2 / 128, paper[1] * step / 2 / 128],
                                                             rel=1e-2)
    assert 0 < bound["paper_fraction_of_bound"][0] < bound["paper_fraction_of_bound"][1] < 1


def test_train_time_cites_the_paper_and_the_gtx580_specs(measured_train_rows):
    text = train_time.summarize(measured_train_rows, OPTIONS).text
    assert figure("paper_training_days").source in text and "5-6 days" in text
    assert figure("gtx580_fp32_flops_per_s").source in text
    assert "1.581 TFLOP/s" in text and "192.4 GB/s" in text and "208-250 images/s" in text
    assert "two-card bound" in text


# -- the other summaries, with the harness's columns ------------------------------------------------------------------
def test_backends_speedup_is_eager_over_backend_and_incorrect_rows_are_not_speeds():
    base = dict(layer="conv1", device=GPU, dtype="bfloat16", batch=128, pass_name="forward")
    df = frame([measured(Case(backend="torch", **base), time_s=0.004),
                measured(Case(backend="compile", **base), time_s=0.002, error_rel=3e-3),
                measured(Case(backend="triton", **base), status="incorrect", error_rel=0.5, note="too far")])
    [row] = backends.comparison(df)
    assert row["compile_speedup"] == pytest.approx(2.0) and row["compile_error"] == 3e-3
    assert row["triton_speedup"] is None and row["triton_status"] == "incorrect" and row["triton_error"] == 0.5
    text = backends.summarize(df, OPTIONS).text
    assert "2x err 3e-03" in text and "incorrect err 5e-01" in text


def test_precision_labels_autocast_and_compares_with_float32():
    base = dict(layer="fc6", device=GPU, batch=128, pass_name="train_step")
    df = frame([measured(Case(dtype="float32", **base), time_s=0.010),
                measured(Case(dtype="bfloat16", options=(("autocast", True),), **base), time_s=0.004),
                measured(Case(dtype="tf32", **base), time_s=0.005)])
    [row] = precision.comparison(df)
    assert row["configs"]["torch bf16 autocast"]["speedup_vs_fp32"] == pytest.approx(2.5)
    assert row["configs"]["torch tf32"]["speedup_vs_fp32"] == pytest.approx(2.0)
    assert "torch bf16 autocast" in precision.summarize(df, OPTIONS).text


def test_batch_summary_finds_the_largest_fit_and_the_first_oom():
    base = dict(layer="network", device=GPU, pass_name="train_step")
    df = frame([measured(Case(batch=1024, **base), time_s=1.0, torch_peak_allocated_bytes=20e9),
                measured(Case(batch=2048, **base), time_s=1.8, torch_peak_allocated_bytes=40e9),
                measured(Case(batch=4096, **base), status="oom", note="out of memory: CUDA out of memory"),
                measured(Case(batch=8192, **base), status="oom", note="out of memory: CUDA out of memory")])
    summary = batch.summarize(df, OPTIONS)
    [sweep] = summary.data["sweeps"]
    assert sweep["largest_fit"] == 2048 and sweep["first_oom"] == 4096
    assert "torch peak allocated" in summary.text and "40 GB" in summary.text


def test_roofline_bound_and_fraction_from_the_ceilings():
    conv = build_network().layer("conv2")
    cost = conv.cost("forward", 128, "float32")
    row = measured(Case(layer="conv2", device=GPU, batch=128), time_s=0.01, flops=cost.flops,
                   bytes_min=cost.bytes_min, arithmetic_intensity_flops_per_byte=cost.arithmetic_intensity,
                   achieved_flops_per_s=cost.flops / 0.01, achieved_bytes_per_s=cost.bytes_min / 0.01,
                   layer_kind="conv", peak_flops_per_s=50e12, peak_bytes_per_s=3e12)
    relu = measured(Case(layer="relu2", device=GPU, batch=128), time_s=0.001, flops=1e6, bytes_min=8e6,
                    achieved_flops_per_s=1e9, achieved_bytes_per_s=8e9, layer_kind="activation",
                    peak_flops_per_s=50e12, peak_bytes_per_s=3e12)
    rows = {r["layer"]: r for r in roofline.roofline_rows(frame([row, relu]))}
    ai = cost.flops / cost.bytes_min
    assert rows["conv2"]["bound_flops_per_s"] == pytest.approx(min(50e12, ai * 3e12))
    assert rows["conv2"]["fraction"] == pytest.approx(cost.flops / 0.01 / min(50e12, ai * 3e12))
    assert rows["conv2"]["limit"] == "compute" and rows["relu2"]["limit"] == "memory"
    assert rows["relu2"]["bound_flops_per_s"] == pytest.approx(1e6 / 8e6 * 3e12)


def test_roofline_reads_the_device_peaks_table_and_says_when_there_are_none(tmp_path):
    path = tmp_path / "peaks.db"
    with Store.open(path) as store:  # the harness's schema
        store.con.execute("INSERT INTO device_peaks (run_id, device, device_name, dtype, threads, matmul_flops_per_s, "
                          "copy_bytes_per_s, method, measured_at) VALUES ('run', 'cpu', 'Test CPU', 'float32', 2, "
                          "1e12, 1e11, 'matmul', 'now')")
        store.con.execute("INSERT INTO device_peaks (run_id, device, device_name, dtype, threads, matmul_flops_per_s, "
                          "copy_bytes_per_s, method, measured_at) VALUES ('run', 'cpu', 'Test CPU', 'float32', 1, "
                          "1e11, 1e10, 'matmul', 'now')")
    row = measured(Case(layer="fc8", device="cpu", batch=4), time_s=0.01, flops=4e7, bytes_min=4e7,
                   achieved_flops_per_s=4e9, achieved_bytes_per_s=4e9, threads=2, store=str(path))
    summary = roofline.summarize(frame([row]), OPTIONS)
    [r] = summary.data["rows"]
    assert r["ceiling_source"] == "device_peaks" and r["bound_flops_per_s"] == pytest.approx(1e11)
    assert r["fraction"] == pytest.approx(0.04)
    Store.open(tmp_path / "bare.db").close()
    bare = roofline.summarize(frame([dict(row, store=str(tmp_path / "bare.db"))]), OPTIONS)
    assert "ceilings were not measured" in bare.text


def test_energy_per_image_and_power_timeline(tmp_path):
    path = tmp_path / "power.db"
    case = Case(device=GPU, batch=128, pass_name="train_step", dtype="bfloat16")
    with Store.open(path) as store:  # the harness's schema
        store.con.executemany("INSERT INTO power_samples VALUES ('run', ?, ?, ?, ?, 'nvml')",
                              [(case.key, i, i * 0.01, 300 + i % 7) for i in range(600)])
    rows = [measured(case, time_s=0.1, energy_j=3000.0, energy_window_s=6.0, energy_per_image_j=0.39,
                     images_per_j=1 / 0.39, power_mean_w=500.0, power_max_w=650.0, power_sample_count=600,
                     power_or_thermal_throttled=False, store=str(path)),
            # energy without a per-image figure (the runner leaves it out where the window held untimed work)
            measured(Case(device=GPU, batch=128, pass_name="backward"), time_s=0.05, energy_j=2000.0,
                     energy_window_s=5.0, energy_note="energy_j includes the untimed forward", store=str(path))]
    summary = energy.summarize(frame(rows), OPTIONS)
    by_pass = {r["pass"]: r for r in summary.data["rows"]}
    assert by_pass["train_step"]["j_per_image"] == 0.39
    assert len(by_pass["train_step"]["timeline"]) <= energy.TIMELINE_POINTS
    assert by_pass["train_step"]["timeline"][0] == (0.0, 300.0)
    assert by_pass["backward"]["j_per_image"] is None and by_pass["backward"]["energy_j"] == 2000.0
    assert "untimed forward" in by_pass["backward"]["note"]
    assert "Most efficient" in summary.text and "not measurable" not in summary.text


def test_energy_says_why_when_energy_is_null():
    row = measured(Case(device="cpu", batch=4), time_s=1.0, energy_j=None,
                   energy_note="RAPL: /sys/class/powercap is absent")
    text = energy.summarize(frame([row]), OPTIONS).text
    assert "Energy was not measurable here: RAPL: /sys/class/powercap is absent" in text
