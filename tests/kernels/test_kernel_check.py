"""Ahead-of-time compilation for a GPU that is not here (perfkit.kernels.aot, perfkit.kernels.tuning,
perfkit.app.kernelcheck): the check refuses what could not launch, the seeds do not specialize, the default policy's
binary counts, the committed tables, and the precompile's cache that a GPU run reads.

The kernels must be imported for a GPU (TRITON_INTERPRET unset), which the interpreter-mode test process cannot do,
so the compiling tests run their bodies in a fresh Python without TRITON_INTERPRET. Each compiles at most a few small
binaries (seconds)."""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("triton")

tuning = importlib.import_module("perfkit.kernels.tuning")


def run_for_gpu(code: str, tmp_path, timeout: int = 600) -> dict:
    """Run ``code`` in a fresh interpreter with the kernels imported for a GPU; it prints one JSON object last."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path / "triton-cache")
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_config_over_the_shared_memory_limit_is_refused_on_sm_90(tmp_path):
    """A copy of linear's list with one config added whose operand ring buffers need 384 KiB (256 x 256 x 128 tiles
    of float16, 3 stages): the compiler builds it, and the check refuses it as unlaunchable on sm_90, while a config
    of the committed list passes."""
    out = run_for_gpu("""
        import importlib, json, torch, triton
        from perfkit import kernels
        from perfkit.kernels import aot, tuning
        from perfkit.app.kernelcheck import Binary, judge

        linear = importlib.import_module("perfkit.kernels.linear")  # the package exports the function `linear`

        x, w = torch.empty(128, 512, dtype=torch.float16), torch.empty(256, 512, dtype=torch.float16)
        with tuning.recording_launches("sm_90", 132) as launches:
            kernels.linear(x, w)
        (launch,) = launches
        listed = linear.gemm_configs()[0]
        too_big = triton.Config({"BLOCK_M": 256, "BLOCK_N": 256, "BLOCK_K": 128, "GROUP_M": 8}, num_warps=8,
                                num_stages=3)
        result = {}
        for name, config in (("listed", listed), ("too_big", too_big)):
            with aot.target_driver("sm_90"):
                key, data = aot.specialize(launch.kernel.fn, launch.args, {**launch.kwargs, **config.all_kwargs()})
            spec = aot.BinarySpec("_linear_kernel", "perfkit.kernels.linear", tuning.config_label(config), key, data)
            binary = Binary(spec, "problem", default=True, uses={("test", "float16")})
            binary.figures = aot.compile_binary("sm_90", spec.module, spec.kernel, data)
            judge(binary, "sm_90")
            result[name] = {"verdict": binary.verdict, "failure": binary.failure,
                            "shared": binary.figures.shared_bytes, "wgmma": binary.figures.wgmma}
        print(json.dumps(result))
    """, tmp_path)
    assert out["listed"]["verdict"] == "ok", out
    assert out["listed"]["wgmma"] > 0  # a float16 GEMM on sm_90 reaches the tensor cores
    assert out["too_big"]["shared"] > 227 * 1024
    assert out["too_big"]["verdict"] == "FAIL"
    assert "shared memory" in out["too_big"]["failure"] and "sm_90" in out["too_big"]["failure"]


def test_a_new_dropout_seed_does_not_compile_a_new_binary(tmp_path):
    """Seeds change on every call; one divisible by 16 (or equal to 1) must not select another specialization."""
    out = run_for_gpu("""
        import json, torch
        from perfkit import kernels
        from perfkit.kernels import aot, tuning

        keys = {}
        x = torch.empty(128, 4096)
        w = torch.empty(4096, 4096)
        for seed in (1, 16, 17, 2**40):
            with tuning.recording_launches("sm_90", 132) as launches:
                kernels.dropout(x, p=0.5, seed=seed)
                kernels.linear(x, w, dropout_p=0.5, dropout_seed=seed)
            with aot.target_driver("sm_90"):
                for launch in launches:
                    kernel = launch.kernel
                    kwargs = dict(launch.kwargs)
                    if isinstance(kernel, tuning.TunedKernel):
                        config, _ = kernel.choose(launch.args, kwargs, launch.grid, "sm_90", 132)
                        kwargs.update(config.all_kwargs())
                        kernel = kernel.fn
                    key, _ = aot.specialize(kernel, launch.args, kwargs)
                    keys.setdefault(launch.name, set()).add(key)
        print(json.dumps({name: len(found) for name, found in keys.items()}))
    """, tmp_path)
    assert out, "no launches recorded"
    # int64 seeds (2**40) are a different argument type, so at most two binaries: int32 and int64 seeds.
    assert all(count <= 2 for count in out.values()), out
    assert out["_dropout_kernel"] <= 2


def test_the_default_policy_needs_at_most_40_binaries_for_a_train_step(tmp_path):
    """alexnet2012's train step at batch 128 in bfloat16, counted by the check's own recording: one config per
    problem under the default policy, and more with every config of the lists."""
    out = run_for_gpu("""
        import json
        from perfkit.app import kernelcheck
        cases = [c for c in kernelcheck.check_cases(128, ["bfloat16"]) if c[0] == "network train_step"]
        default = kernelcheck.collect_binaries(cases, "sm_90", "default")
        full = kernelcheck.collect_binaries(cases, "sm_90", "all")
        print(json.dumps({"default": len(default), "all": len(full),
                          "kernels": sorted({b.spec.kernel for b in default.values()})}))
    """, tmp_path)
    assert 0 < out["default"] <= 40, out
    assert out["all"] > out["default"]
    assert {"_conv2d_kernel", "_conv2d_dgrad_kernel", "_conv2d_wgrad_kernel", "_linear_kernel", "_sgd_kernel",
            "_lrn_max_pool2d_kernel", "_lrn_backward_kernel", "_cross_entropy_kernel"} <= set(out["kernels"])


def test_the_precompiled_binary_is_the_one_a_run_finds_in_the_cache(tmp_path):
    """Worker processes compile through Triton's preload into the on-disk cache; the launch path of the measuring
    process (JITFunction.run) then finds that binary there and compiles nothing."""
    out = run_for_gpu("""
        import json, os, time, torch
        from perfkit import kernels
        from perfkit.kernels import aot, tuning

        x = torch.empty(1000, 96)
        with tuning.recording_launches("sm_90", 132) as launches:
            kernels.relu(x)
        (launch,) = launches
        with aot.target_driver("sm_90"):
            key, data = aot.specialize(launch.kernel, launch.args, launch.kwargs)
        spec = aot.BinarySpec(launch.name, launch.kernel.fn.__module__, None, key, data)
        (figures,) = aot.compile_in_parallel("sm_90", [spec], jobs=1)
        cache = os.environ["TRITON_CACHE_DIR"]
        before = sorted(os.listdir(cache))
        with aot.target_driver("sm_90"):
            start = time.perf_counter()
            kernel = launch.kernel.run(*launch.args, grid=launch.grid, warmup=True, **launch.kwargs)
            seconds = time.perf_counter() - start
        print(json.dumps({"error": figures.error, "before": len(before), "after": len(os.listdir(cache)),
                          "seconds": seconds, "has_cubin": "cubin" in kernel.asm}))
    """, tmp_path)
    assert out["error"] is None
    assert out["has_cubin"]
    assert out["after"] == out["before"], "the run compiled a binary the precompile had not put in the cache"


def test_ptxas_log_parsing():
    aot = importlib.import_module("perfkit.kernels.aot")
    log = ("ptxas info    : Compiling entry function '_lrn_backward_kernel' for 'sm_90a'\n"
           "ptxas info    : Function properties for _lrn_backward_kernel\n"
           "    928 bytes stack frame, 1044 bytes spill stores, 1032 bytes spill loads\n"
           "ptxas info    : Used 255 registers, used 0 barriers, 928 bytes cumulative stack size\n")
    assert aot.parse_ptxas_log(log) == {"registers": 255, "stack_bytes": 928, "spill_store_bytes": 1044,
                                        "spill_load_bytes": 1032}
    assert aot.parse_ptxas_log("no figures here") is None


def test_the_cli_arch_names_are_the_arches_the_compiler_knows():
    """The CLI names the arches without importing triton; the names must be those perfkit.kernels.aot compiles."""
    aot = importlib.import_module("perfkit.kernels.aot")
    kernelcheck = importlib.import_module("perfkit.app.kernelcheck")
    assert set(kernelcheck.ARCH_NAMES) == set(aot.ARCHES)


def test_launch_problems_name_the_limit():
    aot = importlib.import_module("perfkit.kernels.aot")
    fits = aot.BinaryFigures(registers=128, num_warps=8, shared_bytes=170 * 1024)
    assert aot.launch_problems(fits, "sm_90") == []
    assert "166912 B" in aot.launch_problems(fits, "sm_80")[0]  # over an A100's 163 KiB
    too_many_registers = aot.BinaryFigures(registers=255, num_warps=16, shared_bytes=0)  # 255 x 512 threads
    assert "registers" in aot.launch_problems(too_many_registers, "sm_90")[0]


def test_unknown_policy_is_an_error_naming_it(monkeypatch):
    monkeypatch.setenv(tuning.POLICY_ENV, "fastest")
    with pytest.raises(ValueError, match="fastest"):
        tuning.autotune_policy()
    monkeypatch.setenv(tuning.POLICY_ENV, "full")
    assert tuning.autotune_policy() == "full"


def test_heuristic_takes_the_largest_tile_that_fills_the_sms():
    triton = pytest.importorskip("triton")
    small = triton.Config({"BLOCK_M": 32, "BLOCK_N": 32})
    large = triton.Config({"BLOCK_M": 128, "BLOCK_N": 128})
    programs = {id(small): 1000, id(large): 100}
    assert tuning.heuristic_choice([small, large], lambda c: programs[id(c)], 132) is small  # large leaves SMs idle
    assert tuning.heuristic_choice([small, large], lambda c: programs[id(c)], 64) is large


def test_nearest_problem_differs_only_in_sizes():
    known = ["float16|M=387200,KG=96,CHANNELS_INNER=False", "float16|M=96800,KG=96,CHANNELS_INNER=False",
             "float32|M=774400,KG=96,CHANNELS_INNER=False"]
    assert tuning.nearest_problem("float16|M=774400,KG=96,CHANNELS_INNER=False", known) == known[0]
    assert tuning.nearest_problem("float16|M=774400,KG=96,CHANNELS_INNER=True", known) is None
    assert tuning.nearest_problem("bfloat16|M=774400,KG=96,CHANNELS_INNER=False", known) is None


@pytest.mark.parametrize("arch", ["sm_90", "sm_80"])
def test_committed_tables_name_only_configs_of_the_lists(arch, monkeypatch):
    """Every default and every pruned config of a committed table is a config its kernel declares (a table written
    for an older list would otherwise be silently ignored)."""
    table = tuning.load_table(arch)
    if not table["defaults"] and not table["unlaunchable"]:
        pytest.skip(f"no committed table for {arch}")
    # the lists a GPU run holds, not the interpreter's single config
    monkeypatch.setattr(importlib.import_module("perfkit.kernels._common"), "_INTERPRETING", False)
    lists = _declared_lists()
    for kernel, problems in table["defaults"].items():
        assert kernel in lists, f"{arch} table names {kernel}, which is not a tuned kernel"
        for problem, label in problems.items():
            assert label in lists[kernel], f"{kernel} {problem}: {label} is not in its list"
    for kernel, by_dtype in table["unlaunchable"].items():
        for labels in by_dtype.values():
            assert set(labels) <= lists[kernel], kernel


def _declared_lists() -> dict[str, set[str]]:
    """{kernel: labels of every config its list can hold, stage-lowered variants included}."""
    import triton

    # the package exports functions named like some modules (linear, augment): import the modules by path
    conv, linear, lrn, pool, augment = (importlib.import_module(f"perfkit.kernels.{name}")
                                        for name in ("conv", "linear", "lrn", "pool", "augment"))

    lists = {
        "_conv2d_kernel": conv.conv_configs(), "_conv2d_dgrad_kernel": conv.dgrad_configs(),
        "_conv2d_wgrad_kernel": conv.wgrad_configs(), "_linear_kernel": linear.gemm_configs(),
        "_linear_splitk_kernel": linear.splitk_configs(), "_augment_kernel": augment.augment_configs(),
        "_max_pool2d_kernel": pool.pool_configs(), "_max_pool2d_backward_kernel": pool.pool_configs(),
        "_lrn_kernel": lrn.lrn_configs(), "_lrn_max_pool2d_kernel": lrn.lrn_configs(),
        "_lrn_backward_kernel": lrn.lrn_configs(),
    }
    out = {}
    for kernel, configs in lists.items():
        labels = set()
        for config in configs:
            for stages in range(1, config.num_stages + 1):
                labels.add(tuning.config_label(triton.Config(dict(config.kwargs), num_warps=config.num_warps,
                                                             num_stages=stages)))
        out[kernel] = labels
    return out


def test_cli_rejects_an_unknown_arch_and_write_tables_without_all(capsys):
    from perfkit.app.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["kernels", "check", "--arch", "sm_70"])
    assert exc.value.code == 2
    assert "sm_70" in capsys.readouterr().err
    assert main(["kernels", "check", "--write-tables"]) == 2
    assert "--configs all" in capsys.readouterr().err


def test_the_table_takes_the_largest_clean_tile_and_lists_the_unlaunchable():
    """build_table from figures alone: per problem the default is the largest tile that fills the SMs among the
    configs clean on every binary of the problem; a spilling one is passed over, an unlaunchable one is listed."""
    kernelcheck = importlib.import_module("perfkit.app.kernelcheck")
    aot = importlib.import_module("perfkit.kernels.aot")
    problem = "float16|M=387200,KG=96"

    def binary(label, programs, **figures):
        spec = aot.BinarySpec("_conv2d_kernel", "perfkit.kernels.conv", label, label, "{}")
        b = kernelcheck.Binary(spec, problem, programs=programs, uses={("network train_step", "float16")})
        b.figures = aot.BinaryFigures(**{"registers": 128, "num_warps": 4, "shared_bytes": 64 * 1024, "has_dot": True,
                                         "wgmma": 8, "mma_sync": 0, "spill_store_bytes": 0, **figures})
        return b

    binaries = {
        "huge": binary("BLOCK_M=256,BLOCK_N=256,BLOCK_K=64/w8/s3", 1000, shared_bytes=300 * 1024),
        "spills": binary("BLOCK_M=256,BLOCK_N=128,BLOCK_K=64/w8/s3", 2000, spill_store_bytes=132),
        "clean": binary("BLOCK_M=128,BLOCK_N=128,BLOCK_K=64/w8/s3", 4000),
        "small": binary("BLOCK_M=64,BLOCK_N=64,BLOCK_K=64/w4/s4", 16000),
        "no_tensor_cores": binary("BLOCK_M=128,BLOCK_N=256,BLOCK_K=64/w8/s3", 2000, wgmma=0),
    }
    table = kernelcheck.build_table(binaries, "sm_90", "test")
    assert table["defaults"]["_conv2d_kernel"][problem] == "BLOCK_M=128,BLOCK_N=128,BLOCK_K=64/w8/s3"
    refused = table["unlaunchable"]["_conv2d_kernel"]["float16"]
    assert list(refused) == ["BLOCK_M=256,BLOCK_N=256,BLOCK_K=64/w8/s3"]
    assert "shared memory" in refused["BLOCK_M=256,BLOCK_N=256,BLOCK_K=64/w8/s3"]
    assert table["no_clean_config"] == []
