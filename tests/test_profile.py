"""`perfkit profile`: every op of a profiled step attributed to a layer or a named part, kernels classified by library
from names of real CUDA traces, GPU idle time from kernel intervals, ncu's CSV parsed, profiles stored and migrated,
traces readable as Chrome trace JSON."""
import sqlite3
import sys

import pytest

from perfkit.app import profile
from perfkit.backends import get_backend
from perfkit.cases import Case
from perfkit.app.cli import main
from perfkit.results.store import SCHEMA_VERSION, Store, load_profile_ops, load_profiles


@pytest.fixture(scope="module")
def bare_runner():
    from perfkit.runner import calls_only_runner

    return calls_only_runner()


def _profiled(runner, case, trace=None, steps=1):
    run, prepare = runner.work(case, get_backend(case.backend)).timed()
    return profile.profile_call(run, prepare, case.device, profile.layer_names(runner, case), steps, trace)


def test_every_op_of_a_network_train_step_is_attributed_to_a_layer_or_a_named_part(bare_runner, tmp_path):
    case = Case(layer="network", backend="torch", batch=1, pass_name="train_step")
    result = _profiled(bare_runner, case, tmp_path / "t.json.gz")
    layers = set(bare_runner.network(case).layer_names)
    parts = {op.layer for op in result.ops}
    assert parts <= layers | set(profile.NON_LAYER_PARTS), parts - layers
    assert {"conv1", "lrn1", "fc6", "loss", profile.OPTIMIZER, profile.ZERO_GRAD} <= parts
    # the backward ops belong to their layers, through the autograd nodes' sequence numbers
    backward = {op.layer for op in result.ops if op.name == "aten::convolution_backward"}
    assert backward == {"conv1", "conv2", "conv3", "conv4", "conv5"}
    # nothing unattributed: no time outside the layers and the named parts
    outside = sum(op.self_s_per_step for op in result.ops if op.layer == profile.OUTSIDE)
    assert outside == 0.0, [op for op in result.ops if op.layer == profile.OUTSIDE]
    # self times add up to the step (what is left is the profiler's own bookkeeping between ops)
    assert 0.9 < sum(op.self_s_per_step for op in result.ops) / result.step_s <= 1.0 + 1e-6
    assert result.launches_per_step > 50 and result.gpu_idle_share is None
    trace = profile.read_trace(tmp_path / "t.json.gz")
    names = {e.get("name") for e in trace["traceEvents"]}
    assert {"conv1", "fc6", "aten::convolution_backward"} <= names  # the layer ranges are in the trace too


def test_layer_ranges_are_opened_only_while_profiling(bare_runner):
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from perfkit.model import layer_ranges

    case = Case(layer="conv1", backend="torch", batch=1, pass_name="forward")
    run, _ = bare_runner.work(case, get_backend("torch")).timed()
    with torch_profile(activities=[ProfilerActivity.CPU]) as plain:
        run()
    with layer_ranges(), torch_profile(activities=[ProfilerActivity.CPU]) as annotated:
        run()
    assert "conv1" not in {e.name for e in plain.events()}
    assert "conv1" in {e.name for e in annotated.events()}


def test_compiled_forward_launches_fewer_ops_than_eager(bare_runner):
    eager = _profiled(bare_runner, Case(layer="network", backend="torch", batch=1))
    compiled = _profiled(bare_runner, Case(layer="network", backend="compile", batch=1))
    assert compiled.launches_per_step < eager.launches_per_step
    assert {op.layer for op in compiled.ops} <= {profile.COMPILED_FORWARD, "step (outside layers)"}


#: Kernel names as they appear in CUDA traces of AlexNet layers (torch 2.x on A100/H100, cuDNN 9, cuBLAS 12), and
#: perfkit's own.
REAL_KERNELS = {
    "sm80_xmma_fprop_implicit_gemm_indexed_tf32f32_tf32f32_f32_nhwckrsc_nchw_tilesize128x128x16_stage4_warpsize2x2x1_"
    "g1_tensor16x8x8_execute_kernel__5x_cudnn": profile.KIND_CUDNN,
    "void cudnn::engines_precompiled::nchwToNhwcKernel<float, float, float, false, true, (cudnnKernelDataType_t)2>"
    "(cudnn::engines_precompiled::nchw2nhwc_params_t<float>, float const*, float*)": profile.KIND_CUDNN,
    "void implicit_convolve_sgemm<float, float, 128, 5, 5, 3, 3, 3, 1, false, false, true>(int, int, int, float const*"
    ", int, float*, float const*, kernel_conv_params, unsigned long long, int, float, float, int, float const*, float "
    "const*, bool, int, int)": profile.KIND_CUDNN,
    "void wgrad_alg0_engine<float, 128, 6, 8, 3, 3, 5, false, 512>(int, int, int, float const*, int, float*, float "
    "const*, kernel_grad_params, unsigned long long, int, float, int, int, int, int)": profile.KIND_CUDNN,
    "sm90_xmma_gemm_f32f32_tf32f32_f32_tn_n_tilesize128x128x32_warpgroupsize1x1x1_execute_segment_k_off_kernel__5x_"
    "cublas": profile.KIND_CUBLAS,
    "ampere_sgemm_128x64_tn": profile.KIND_CUBLAS,
    "void gemv2T_kernel_val<int, int, float, float, float, float, 128, 16, 4, 4, false, false, cublasGemvParamsEx<int, "
    "cublasGemvTensorStridedBatched<float const>, cublasGemvTensorStridedBatched<float const>, "
    "cublasGemvTensorStridedBatched<float>, float> >(cublasGemvParamsEx<...>, float, float)": profile.KIND_CUBLAS,
    "void cublasLt::splitKreduce_kernel<32, 16, int, float, float, float, float, false, true, false>"
    "(cublasLt::cublasSplitKParams<float>, float const*, float const*, float*, float const*, float const*, float "
    "const*, float const*, float*, void*, long, float*, int*)": profile.KIND_CUBLAS,
    "void cutlass::Kernel2<cutlass_80_tensorop_s1688gemm_bf16_128x128_32x4_tn_align8>(cutlass_80_tensorop_s1688gemm_"
    "bf16_128x128_32x4_tn_align8::Params)": profile.KIND_CUTLASS,
    "void at::native::vectorized_elementwise_kernel<4, at::native::(anonymous namespace)::launch_clamp_scalar("
    "at::TensorIteratorBase&, c10::Scalar, c10::Scalar, at::native::detail::ClampLimits)::{lambda()#1}::operator()() "
    "const::{lambda()#7}::operator()() const::{lambda(float)#1}, at::detail::Array<char*, 2> >(int, ...)":
        profile.KIND_ATEN_CUDA,
    "triton_poi_fused_convolution_relu_0": profile.KIND_INDUCTOR_TRITON,
    "triton_red_fused__log_softmax_nll_loss_forward_1": profile.KIND_INDUCTOR_TRITON,
    "Memcpy HtoD (Pageable -> Device)": profile.KIND_MEMCPY,
    "Memset (Device)": profile.KIND_MEMSET,
}


@pytest.mark.parametrize("name", sorted(REAL_KERNELS))
def test_library_kernels_are_classified_by_name(name):
    assert profile.classify(name, on_device=True) == REAL_KERNELS[name]


def test_perfkit_triton_kernels_are_recognised_by_their_jit_names():
    names = profile.perfkit_kernel_names()
    assert len(names) >= 10 and all(n.endswith("_kernel") for n in names)
    for name in names:
        assert profile.classify(name, on_device=True) == profile.KIND_PERFKIT_TRITON, name
    assert profile.classify("aten::addmm", on_device=False) == profile.KIND_ATEN
    assert profile.classify("autograd::engine::evaluate_function: AddmmBackward0", False) == profile.KIND_AUTOGRAD


def test_gpu_idle_share_is_the_step_not_covered_by_any_kernel():
    # one step of 100 us: kernels 10-30 and 20-50 overlap (busy 10-50), 60-70 busy, one kernel outside the step
    assert profile.gpu_idle_share([(0, 100)], [(10, 30), (20, 50), (60, 70), (150, 160)]) == pytest.approx(0.5)
    assert profile.gpu_idle_share([(0, 100), (200, 300)], [(0, 100), (250, 300)]) == pytest.approx(0.25)
    assert profile.gpu_idle_share([(0, 0)], []) is None


NCU_CSV = '''==PROF== Connected to process 4242 (/usr/bin/python3.12)
==PROF== Profiling "_conv2d_fwd_kernel" - 0: 0%....50%....100% - 9 passes
"ID","Process ID","Process Name","Host Name","Kernel Name","Context","Stream","Block Size","Grid Size","Device","CC",\
"sm__throughput.avg.pct_of_peak_sustained_elapsed","gpu__dram_throughput.avg.pct_of_peak_sustained_elapsed",\
"sm__warps_active.avg.pct_of_peak_sustained_active","sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active"
"","","","","","","","","","","","%","%","%","%"
"0","4242","python3.12","gpu-box","_conv2d_fwd_kernel","1","7","(256, 1, 1)","(1056, 1, 1)","0","9.0","71.52","38.10",\
"46.87","62.25"
"1","4242","python3.12","gpu-box","_lrn_max_pool_kernel","1","7","(128, 1, 1)","(2904, 1, 1)","0","9.0","22.04",\
"81.93","90.12","0"
==PROF== Disconnected from process 4242
'''


def test_ncu_csv_is_parsed_per_kernel():
    kernels = profile.parse_ncu_csv(NCU_CSV.replace("\\\n", ""))
    assert [k.kernel for k in kernels] == ["_conv2d_fwd_kernel", "_lrn_max_pool_kernel"]
    first = kernels[0]
    assert (first.sm_throughput_pct, first.dram_throughput_pct, first.achieved_occupancy_pct,
            first.tensor_pipe_pct) == (71.52, 38.10, 46.87, 62.25)
    assert kernels[1].tensor_pipe_pct == 0.0
    with pytest.raises(ValueError, match="Kernel Name"):
        profile.parse_ncu_csv("a,b\n1,2\n")


def test_without_ncu_nothing_is_stored_and_the_reason_is_given(monkeypatch):
    monkeypatch.setattr(profile.shutil, "which", lambda name: None)
    kernels, why = profile.run_ncu(["--layer", "conv1"])
    assert kernels == [] and "ncu (Nsight Compute) is not on PATH" in why
    cmd = profile.ncu_command(["--layer", "conv1"])
    assert cmd[:2] == ["ncu", "--csv"] and "--clock-control" in cmd and cmd[cmd.index("--clock-control") + 1] == "none"
    assert [cmd[i + 1] for i, a in enumerate(cmd) if a == "--section"] == list(profile.NCU_SECTIONS)
    assert cmd[-1] == "--ncu-child" and sys.executable in cmd


def test_profiles_are_stored_replaced_and_migrated_into_an_older_store(tmp_path):
    path = tmp_path / "old.db"
    with Store.open(path) as store:
        store.add_environment({}, "e", "m")
    con = sqlite3.connect(path)
    con.execute("DROP TABLE profiles")
    con.execute("DROP TABLE profile_ops")
    con.execute("DROP TABLE ncu_kernels")
    con.execute("PRAGMA user_version=3")
    con.commit()
    con.close()
    assert load_profiles(path).empty  # an older store: no profiles, no error
    op = profile.OpShare("aten::addmm", profile.KIND_ATEN, "fc6", False, 1.0, 0.02, 0.02, 0.5)
    with Store.open(path) as store:  # migrated: the tables are added
        store.add_profile({"run_id": "r", "case_key": "k", "steps": 3, "profiled_step_s": 0.04}, [op, op])
        store.add_profile({"run_id": "r", "case_key": "k", "steps": 3, "profiled_step_s": 0.05}, [op])
        assert store.con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    profiles, ops = load_profiles(path), load_profile_ops(path)
    assert len(profiles) == 1 and profiles.profiled_step_s.iloc[0] == 0.05  # the later profile replaced the first
    assert len(ops) == 1 and ops.layer.iloc[0] == "fc6" and ops.on_device.iloc[0] == 0


def test_profile_command_stores_the_profile_beside_the_timed_row(tmp_path, capsys):
    store = tmp_path / "p.db"
    code = main(["profile", "--device", "cpu", "--layer", "fc8", "--batch", "2", "--pass", "forward", "--steps", "1",
                 "--no-progress", "--store", str(store)])
    out = capsys.readouterr().out
    assert code == 0, out
    [row] = load_profiles(store).to_dict("records")
    assert row["profiled_over_timed"] == pytest.approx(row["profiled_step_s"] / row["timed_median_s"])
    assert (tmp_path / row["trace_path"]).is_file() and row["trace_path"].startswith("p-traces/")
    assert "aten::addmm" in out and "profiled / timed" in out
    ops = load_profile_ops(store)
    assert set(ops.layer) == {"fc8"} and (ops.share_of_step.dropna() <= 1).all()


@pytest.mark.parametrize("args,message", [
    (["profile", "--layer", "conv9"], "unknown layer 'conv9'"),
    (["profile", "--backend", "tvm"], "unknown backend 'tvm'"),
    (["profile", "--pass", "inference"], "unknown pass 'inference'"),
    (["profile", "--study", "nope"], "unknown study 'nope'"),
    (["profile", "--quick"], "--quick goes with --study"),
])
def test_bad_profile_arguments_exit_2_with_a_hint(args, message, capsys):
    try:
        code = main(args)
    except SystemExit as exc:
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and "--help" in err


def test_an_unprofiled_case_says_why(tmp_path, open_runner):
    from perfkit.runner import RunnerConfig
    from perfkit.measure.timer import TimingPolicy

    runner = open_runner(RunnerConfig(timing=TimingPolicy(warmup=0, min_reps=1, min_time_s=0.0), check_batch=1,
                                      device_peaks=False, energy=False))
    [record] = profile.profile_cases(runner, [Case(layer="fc8", backend="triton", batch=1)], tmp_path / "runner.db",
                                     show_progress=False)
    assert record["profile"] is None and record["note"].startswith("not profiled: the case is skipped")


class _Event:
    """What analyze reads of a torch.profiler FunctionEvent (times in us)."""

    def __init__(self, name, start, end, parent=None, device="CPU", id=0, linked=0, seq=-1, self_us=None):
        from types import SimpleNamespace

        self.name, self.cpu_parent, self.id, self.linked_correlation_id, self.sequence_nr = name, parent, id, linked, seq
        self.device_type = SimpleNamespace(name=device)
        self.time_range = SimpleNamespace(start=start, end=end)
        self.cpu_time_total = end - start
        self.self_cpu_time_total = self_us if self_us is not None else end - start


def test_gpu_kernels_are_attributed_through_their_launching_op_and_counted_as_launches():
    """A GPU step as the profiler reports it: kernels carry no parent, only the id of the op that launched them."""
    step = _Event("ProfilerStep#2", 0, 1000)
    conv = _Event("conv1", 0, 400, parent=step, self_us=10)
    op = _Event("aten::cudnn_convolution", 10, 390, parent=conv, id=7, self_us=30)
    launch = _Event("cudaLaunchKernel", 20, 30, parent=op, linked=7)
    fc = _Event("fc6", 400, 900, parent=step, self_us=20)
    mm = _Event("aten::mm", 410, 880, parent=fc, id=9, self_us=40)
    events = [step, conv, op, launch, fc, mm,
              _Event("sm90_xmma_fprop_implicit_gemm_tf32f32_tf32f32_f32_nhwckrsc_nchw_cudnn", 100, 300, device="CUDA",
                     linked=7),
              _Event("sm90_xmma_gemm_f32f32_tf32f32_f32_tn_n_cublas", 500, 800, device="CUDA", linked=9),
              _Event("Memset (Device)", 800, 810, device="CUDA", linked=9)]
    result = profile.analyze(events, ["conv1", "fc6"], on_gpu=True)
    kernels = {op.name: op for op in result.ops if op.on_device}
    assert {(k.kind, k.layer) for k in kernels.values()} == {(profile.KIND_CUDNN, "conv1"),
                                                            (profile.KIND_CUBLAS, "fc6"), (profile.KIND_MEMSET, "fc6")}
    assert kernels["sm90_xmma_gemm_f32f32_tf32f32_f32_tn_n_cublas"].self_s_per_step == pytest.approx(300e-6)
    assert result.launches_per_step == 3 and result.step_s == pytest.approx(1e-3)
    assert result.gpu_idle_share == pytest.approx(1 - 510 / 1000)
    runtime = next(op for op in result.ops if op.name == "cudaLaunchKernel")
    assert runtime.kind == profile.KIND_RUNTIME and runtime.layer == "conv1" and not runtime.on_device


def test_a_fused_stage_range_is_attributed_to_its_joined_layers():
    step = _Event("ProfilerStep#2", 0, 100)
    fused = _Event("lrn1+pool1", 0, 100, parent=step, self_us=5)
    op = _Event("aten::empty", 10, 20, parent=fused, id=3)
    kernel = _Event("_lrn_max_pool2d_kernel", 30, 90, device="CUDA", linked=3)
    result = profile.analyze([step, fused, op, kernel], ["lrn1", "pool1", "conv2"], on_gpu=True)
    assert {(o.name, o.kind, o.layer) for o in result.ops} == {
        ("lrn1+pool1", profile.KIND_RANGE, "lrn1+pool1"), ("aten::empty", profile.KIND_ATEN, "lrn1+pool1"),
        ("_lrn_max_pool2d_kernel", profile.KIND_PERFKIT_TRITON, "lrn1+pool1")}
