"""FABRICATED stores for the dashboard layout tests. Not measurements: nothing here is a result.

`fabricated_gpu_store(path)` writes a perfkit store that looks like a GPU machine's after every study has run, with
the columns and tables the instrumented harness adds (energy, power samples, clocks, memory, device peaks, roofline),
so that every section of the report can be laid out and browser-tested on a machine without a GPU. Every name says
what it is: the machine is "FABRICATED FIXTURE GPU", its hostname "fabricated-fixture", every run's arguments carry
"fabricated": true, and the numbers come from a toy cost model with a seeded random generator. Never copy these
stores, figures or numbers into results or documentation.
"""
from __future__ import annotations

import json
import random
import sqlite3
from pathlib import Path

from perfkit.results.store import DEVICE_PEAK_COLUMNS
from perfkit.measure.env import machine_id
from perfkit.specs import build_network
from perfkit.results.store import Store

FIXTURE_GPU_NAME = "FABRICATED FIXTURE GPU"
FIXTURE_HOST = "fabricated-fixture"
FIXTURE_CPU = "FABRICATED FIXTURE CPU"
#: A sentinel time given to rows marked incorrect: a test asserts that it never appears in a figure.
INCORRECT_SENTINEL_S = 0.123456789

# Toy device model (fabricated): peak rates the fixture's timings are drawn around.
_PEAK_FLOPS = {"float32": 40e12, "tf32": 250e12, "float16": 500e12, "bfloat16": 500e12}
_PEAK_BYTES = 2.5e12
_CPU_FLOPS = {1: 60e9, 16: 700e9}
_CPU_BYTES = {1: 10e9, 16: 60e9}

def fixture_environment(hostname: str = FIXTURE_HOST, gpu_name: str = FIXTURE_GPU_NAME) -> dict:
    env = {"hostname": hostname, "os": "Linux-fabricated-fixture", "machine": "x86_64", "cpu_model": FIXTURE_CPU,
           "cpu_count_logical": 16, "memory_total_bytes": 128 * 2 ** 30, "python": "3.11.7",
           "torch": "2.11.0+cu128 (fixture)", "torch_cuda": "12.8", "triton": "3.6.0 (fixture)",
           "perfkit": "0.1.0", "git_commit": "f1c7f1c7f1c7f1c7f1c7f1c7f1c7f1c7f1c7f1c7",
           "gpus": [{"index": 0, "name": gpu_name, "memory_bytes": 80 * 2 ** 30, "compute_capability": "9.0",
                     "sm_count": 132}],
           "gpu_driver": "000.00-fixture", "gpu_note": None, "fabricated": True}
    env["machine_id"] = machine_id(env)
    return env


class _Writer:
    def __init__(self, path: Path, env: dict, rng: random.Random):
        self.store = Store.open(path)
        self.con: sqlite3.Connection = self.store.con
        self.env = env
        self.env_id = "fixture-" + env["machine_id"][:8]
        self.store.add_environment(env, self.env_id, f"{env['gpus'][0]['name']} ({env['hostname']})")
        self.rng = rng
        self.commit = env["git_commit"]
        self.clock = 0

    def run(self, study: str) -> str:
        run_id, _ = self.store.start_or_resume_run(study, {"study": study, "fabricated": True}, self.env_id,
                                                   self.commit, "0.1.0", resume=False)
        return run_id

    def timestamp(self) -> str:
        self.clock += 1
        return f"2026-01-01T00:{self.clock // 60 % 60:02d}:{self.clock % 60:02d}.000+00:00"

    def row(self, run_id: str, study: str, **fields) -> dict:
        network = build_network(fields.get("variant", "alexnet2012"), fields.get("activation", "relu"))
        layer = fields.get("layer", "network")
        pass_name = fields.get("pass_name", "forward")
        batch = fields.get("batch", 128)
        dtype = fields.get("dtype", "float32")
        device = fields.get("device", "cuda:0")
        backend = fields.get("backend", "torch")
        threads = fields.get("threads")
        if layer == "network":
            cost, kind = network.cost(pass_name, batch, dtype), "network"
        else:
            spec = network.layer(layer)
            cost, kind = spec.cost(pass_name, batch, dtype), spec.kind
        if device == "cpu":
            t = cost.flops / _CPU_FLOPS[threads or 16] + cost.bytes_min / _CPU_BYTES[threads or 16]
        else:
            eff = {"torch": 0.55, "compile": 0.62, "triton": 0.5}.get(backend, 0.5) * self.rng.uniform(0.8, 1.15)
            t = max(cost.gemm_flops / (_PEAK_FLOPS[dtype] * eff), cost.bytes_min / (_PEAK_BYTES * eff)) + 6e-6
        t *= self.rng.uniform(0.95, 1.05)
        options = fields.pop("options", {})
        key = "/".join(map(str, [fields.get("variant", "alexnet2012"), layer, backend, device, dtype, f"b{batch}",
                                 pass_name, fields.get("activation", "relu"), f"t{threads}" if threads else "t-"]
                           + [f"{k}={v}" for k, v in sorted(options.items())]))
        row = dict(run_id=run_id, case_key=key, study=study, variant="alexnet2012", layer=layer, layer_kind=kind,
                   backend=backend, is_baseline=int(backend == "torch"), device=device, dtype=dtype, batch=batch,
                   pass_name=pass_name, activation="relu", options=json.dumps(options, sort_keys=True),
                   env_id=self.env_id, status="ok", device_name=FIXTURE_GPU_NAME if device != "cpu" else FIXTURE_CPU,
                   threads=threads if device == "cpu" else None, started_at=self.timestamp(),
                   finished_at=self.timestamp(), error_rel=self.rng.uniform(1e-7, 4e-6) if dtype == "float32" else
                   self.rng.uniform(1e-3, 6e-3), error_tolerance=1e-4 if dtype == "float32" else 2e-2, error_batch=16,
                   timer="perf_counter" if device == "cpu" else "cuda_event", time_median_s=t, time_p10_s=t * 0.97,
                   time_p90_s=t * 1.06, time_mean_s=t * 1.01, time_min_s=t * 0.95, repetitions=50,
                   warmup_repetitions=5, flops=cost.flops, gemm_flops=cost.gemm_flops, bytes_min=cost.bytes_min,
                   arithmetic_intensity_flops_per_byte=cost.arithmetic_intensity, images_per_s=batch / t,
                   achieved_flops_per_s=cost.flops / t, achieved_bytes_per_s=cost.bytes_min / t,
                   cpu_peak_rss_bytes=int(3e9 + self.rng.uniform(0, 1e8)))
        if device != "cpu":
            row.update(l2_flushed=1, cuda_graph=0,
                       torch_peak_allocated_bytes=int(2e8 + cost.bytes_min * 1.5),
                       torch_peak_reserved_bytes=int(4e8 + cost.bytes_min * 1.8),
                       sm_clock_mhz=1980.0, mem_clock_mhz=2619.0, temperature_c_start=41.0, temperature_c_end=48.0,
                       power_limit_w=700.0, gpu_utilization_pct=97.0, clock_event_reasons="none",
                       power_or_thermal_throttled=0,
                       peak_flops_per_s=_PEAK_FLOPS[dtype] * 0.9, peak_bytes_per_s=_PEAK_BYTES * 0.9)
            bound = min(row["peak_flops_per_s"], cost.arithmetic_intensity * row["peak_bytes_per_s"])
            row.update(roofline_bound_flops_per_s=bound, roofline_fraction=row["achieved_flops_per_s"] / bound)
        else:
            row.update(gpu_note="CPU case: no GPU monitor")
        row.update(fields)
        return row

    def add(self, row: dict) -> dict:
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        self.con.execute(f"INSERT INTO measurements ({cols}) VALUES ({marks})", tuple(row.values()))
        return row

    def close(self, runs: list[str]) -> None:
        for run_id in runs:
            self.store.finish_run(run_id)
        self.store.close()


def fabricated_gpu_store(path: str | Path, seed: int = 0, hostname: str = FIXTURE_HOST,
                         gpu_name: str = FIXTURE_GPU_NAME, with_newer_studies: bool = True) -> Path:
    """A FABRICATED GPU machine's store with rows for every study and every optional column and table (see the
    module docstring); without the ingredients, augmentation and multigpu studies (dash_study_fixtures) when
    `with_newer_studies` is false. For layout and browser tests only."""
    path = Path(path)
    w = _Writer(path, fixture_environment(hostname, gpu_name), random.Random(seed))
    layers = list(build_network("alexnet2012").layer_names) + ["network"]
    runs = []

    run = w.run("baseline")
    runs.append(run)
    for device in ("cpu", "cuda:0"):
        for layer in layers:
            for p in ("forward", "train_step"):
                w.add(w.row(run, "baseline", layer=layer, pass_name=p, device=device,
                            threads=16 if device == "cpu" else None))

    run = w.run("speedup2012")
    runs.append(run)
    for layer in ("conv1", "conv2", "conv3", "fc6", "network"):
        for p in ("forward", "train_step"):
            for threads in (1, 16):
                w.add(w.row(run, "speedup2012", layer=layer, pass_name=p, device="cpu", threads=threads))
            for backend, dtype in (("torch", "float32"), ("torch", "tf32"), ("torch", "bfloat16"),
                                   ("triton", "float32")):
                w.add(w.row(run, "speedup2012", layer=layer, pass_name=p, backend=backend, dtype=dtype))

    run = w.run("backends")
    runs.append(run)
    for layer in ("conv1", "relu1", "lrn1", "pool1", "conv2", "fc6", "network"):
        for p in ("forward", "backward", "train_step"):
            for backend in ("torch", "compile", "triton"):
                for dtype in ("float32", "bfloat16"):
                    row = w.row(run, "backends", layer=layer, pass_name=p, backend=backend, dtype=dtype)
                    if (backend, layer, p, dtype) == ("triton", "lrn1", "backward", "float32"):
                        row.update(status="incorrect", error_rel=0.21, time_median_s=INCORRECT_SENTINEL_S,
                                   images_per_s=None, note="not timed: error 0.21 in grad_input exceeds the float32 "
                                                           "tolerance 0.0001 (fabricated)")
                    w.add(row)
    w.add(dict(w.row(run, "backends", layer="network", pass_name="train_step", backend="triton",
                     dtype="float16"), status="skipped", time_median_s=None, images_per_s=None,
               note="fabricated skip: float16 train step not implemented"))

    run = w.run("batch")
    runs.append(run)
    for backend in ("torch", "triton"):
        for p in ("forward", "train_step"):
            for batch in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048):
                row = w.row(run, "batch", batch=batch, pass_name=p, backend=backend)
                if p == "train_step" and batch == 2048:
                    row.update(status="oom", time_median_s=None, images_per_s=None,
                               note="out of memory: fabricated OOM at batch 2048")
                w.add(row)

    run = w.run("precision")
    runs.append(run)
    for backend in ("torch", "triton"):
        for p in ("forward", "train_step"):
            for dtype in ("float32", "tf32", "float16", "bfloat16"):
                w.add(w.row(run, "precision", pass_name=p, backend=backend, dtype=dtype))

    run = w.run("energy")
    runs.append(run)
    samples = []
    for backend in ("torch", "triton"):
        for dtype in ("float32", "bfloat16"):
            for p in ("forward", "train_step"):
                row = w.row(run, "energy", pass_name=p, backend=backend, dtype=dtype)
                throttled = (backend, dtype, p) == ("torch", "float32", "train_step")
                mean_w = w.rng.uniform(420, 640) if not throttled else 690.0
                window = 5.4
                energy = mean_w * window
                images = row["images_per_s"] * window
                row.update(energy_j=energy, energy_window_s=window, energy_source="nvml_total_energy",
                           energy_per_image_j=energy / images, images_per_j=images / energy, power_mean_w=mean_w,
                           power_max_w=mean_w * 1.08, power_sample_count=54, power_or_thermal_throttled=int(throttled),
                           clock_event_reasons="sw_power_cap" if throttled else "none",
                           sm_clock_mhz=1755.0 if throttled else 1980.0, cpu_energy_j=None,
                           cpu_energy_note="RAPL not readable (fabricated)")
                w.add(row)
                for i in range(54):
                    t = i * 0.1
                    ramp = min(1.0, t / 0.6)
                    samples.append((run, row["case_key"], i, t, 90 + (mean_w - 90) * ramp + w.rng.uniform(-12, 12)))
    w.con.executemany("INSERT INTO power_samples (run_id, case_key, sample_index, t_s, power_w, source) "
                      "VALUES (?, ?, ?, ?, ?, 'fabricated')", samples)

    run = w.run("roofline")
    runs.append(run)
    peaks = []
    for dtype in ("float32", "tf32", "bfloat16"):
        peaks.append((run, "cuda:0", FIXTURE_GPU_NAME, dtype, 16, _PEAK_FLOPS[dtype] * 0.9, _PEAK_BYTES * 0.9,
                      "fabricated: toy model", "2026-01-01T00:00:00+00:00", None))
    w.con.executemany(f"INSERT INTO device_peaks ({', '.join(DEVICE_PEAK_COLUMNS)}) VALUES "
                      f"({', '.join('?' * len(DEVICE_PEAK_COLUMNS))})", peaks)
    for layer in layers:
        for backend in ("torch", "triton"):
            for dtype in ("float32", "bfloat16"):
                w.add(w.row(run, "roofline", layer=layer, pass_name="forward", backend=backend, dtype=dtype))

    run = w.run("train_time")
    runs.append(run)
    for backend in ("torch", "compile", "triton"):
        for dtype in ("float32", "bfloat16"):
            w.add(w.row(run, "train_time", pass_name="train_step", backend=backend, dtype=dtype))
    w.store.add_summary(run, "train_time", "fabricated summary", {"fabricated": True})

    run = w.run("activations")
    runs.append(run)
    for act in ("relu", "tanh", "sigmoid"):
        for backend in ("torch", "triton"):
            w.add(w.row(run, "activations", layer=f"{act}1", activation=act, backend=backend,
                        options={"fused": False}))
    curves = []
    for act, speed in (("relu", 1.0), ("tanh", 0.3), ("sigmoid", 0.12)):
        wall = 0.0
        for epoch in range(1, 21):
            wall += 1.9 * w.rng.uniform(0.97, 1.03)
            err = 0.9 * (1 - speed * 0.12) ** (epoch * 4) + 0.02
            curves.append({"activation": act, "epoch": epoch, "train_error": round(min(err, 0.9), 4),
                           "wall_s": round(wall, 3), "dataset": "sklearn-digits (fabricated)"})
    w.store.add_summary(run, "activations", "fabricated summary", {"curves": curves, "fabricated": True})
    if with_newer_studies:
        from dash_study_fixtures import add_study_rows

        add_study_rows(w, runs)
    w.close(runs)
    return path
