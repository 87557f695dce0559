"""The measurement record: one tidy row per case, as stored.

Field names carry their units. A value that could not be measured is None and the matching `*_note` says why; it is
never 0. Monitors return dataclasses whose fields are a subset of these names, so the runner copies them in as they are.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

#: Row statuses. Only "ok" rows are speed results; "incorrect" rows failed the check against the reference.
STATUSES = ("ok", "incorrect", "skipped", "oom", "error")


@dataclass
class Measurement:
    # -- identity -----------------------------------------------------------------------------------------------------
    run_id: str
    case_key: str
    study: str
    variant: str
    layer: str  # a layer name, or "network"
    layer_kind: str  # conv, activation, lrn, maxpool, dropout, linear, cross_entropy, network
    backend: str
    is_baseline: bool  # the reference backend (torch)
    device: str  # "cpu", "cuda:0"
    dtype: str  # float32 (IEEE), tf32, float16, bfloat16
    batch: int
    pass_name: str  # forward, backward, train_step
    activation: str
    options: str  # JSON object of study-specific knobs
    env_id: str
    status: str = "ok"
    note: str | None = None  # why the row is skipped, incorrect or failed
    device_name: str | None = None
    threads: int | None = None  # torch.get_num_threads() during the case
    started_at: str | None = None  # ISO 8601, UTC
    finished_at: str | None = None

    # -- correctness against the float64 CPU reference --------------------------------------------------------------
    error_rel: float | None = None  # relative Frobenius error, worst tensor
    error_tolerance: float | None = None
    error_batch: int | None = None  # images the check ran on
    error_note: str | None = None

    # -- timing -------------------------------------------------------------------------------------------------------
    timer: str | None = None  # perf_counter, cuda_event
    time_median_s: float | None = None
    time_p10_s: float | None = None
    time_p90_s: float | None = None
    time_mean_s: float | None = None
    time_min_s: float | None = None
    repetitions: int | None = None
    warmup_repetitions: int | None = None
    l2_flushed: bool | None = None  # GPU L2 flushed before each repetition (False: hot cache; always False on the CPU)
    cuda_graph: bool | None = None  # the timed call was a CUDA-graph replay
    autotune_policy: str | None = None  # triton rows: "default" (committed tables) or "full" (swept on this GPU)
    kernel_configs: str | None = None  # triton rows: JSON {kernel: {problem: {"config", "from"}}} of the launches
    timing_note: str | None = None
    graphs_compiled: int | None = None  # compile rows: graphs dynamo captured for the case (0 would be eager: an error)
    compiles_in_window: int | None = None  # compilations during the timed repetitions and energy window (should be 0)
    compile_note: str | None = None

    # -- work and rates (cost model, see perfkit.specs) ---------------------------------------------------------------
    flops: float | None = None  # per call of the pass; a multiply-add is 2 FLOPs
    gemm_flops: float | None = None
    bytes_min: float | None = None
    arithmetic_intensity_flops_per_byte: float | None = None
    images_per_s: float | None = None
    achieved_flops_per_s: float | None = None
    achieved_bytes_per_s: float | None = None

    # -- roofline (perfkit.measure.peaks: the device's peaks measured once per run) -------------------------------------------
    peak_flops_per_s: float | None = None  # measured matmul rate of the device in the row's dtype
    peak_bytes_per_s: float | None = None  # measured device-to-device copy bandwidth (read + write bytes)
    roofline_bound_flops_per_s: float | None = None  # min(peak_flops, intensity x peak_bytes)
    roofline_fraction: float | None = None  # achieved_flops_per_s / roofline_bound_flops_per_s
    roofline_note: str | None = None

    # -- memory -------------------------------------------------------------------------------------------------------
    cpu_peak_rss_bytes: int | None = None  # peak resident set size of the process during the timed window
    cpu_memory_note: str | None = None
    torch_peak_allocated_bytes: int | None = None  # torch CUDA allocator peak in the timed window (reset per case)
    torch_peak_reserved_bytes: int | None = None  # torch CUDA allocator's reserved peak in the timed window
    nvml_used_bytes: int | None = None  # whole-device used memory at the end of the timed window (NVML)
    gpu_memory_note: str | None = None

    # -- energy: over a sustained window after the timed repetitions (the case back to back, >= 5 s on a GPU) ---------
    energy_j: float | None = None  # the device's energy in the window: the GPU's (NVML) or the CPU packages' (RAPL)
    energy_window_s: float | None = None
    energy_source: str | None = None  # "nvml_total_energy" (GPU rows), "rapl" (CPU rows)
    energy_note: str | None = None
    energy_per_image_j: float | None = None  # energy_j / images processed in the window
    images_per_j: float | None = None
    cpu_energy_j: float | None = None  # host CPU packages (RAPL) in the same window, on any row where readable
    cpu_energy_note: str | None = None

    # -- power and GPU state over the same window (NVML) ---------------------------------------------------------------
    power_mean_w: float | None = None  # mean of the power samples (the timeline is in the power_samples table)
    power_max_w: float | None = None
    power_sample_count: int | None = None
    power_note: str | None = None
    sm_clock_mhz: float | None = None  # median of polls during the window
    mem_clock_mhz: float | None = None
    temperature_c_start: int | None = None
    temperature_c_end: int | None = None
    power_limit_w: float | None = None  # enforced power limit
    gpu_utilization_pct: float | None = None
    clock_event_reasons: str | None = None  # NVML clock-event (throttle) reason names seen, comma-separated; "none"
    power_or_thermal_throttled: bool | None = None  # a power or thermal reason was active at some poll
    gpu_note: str | None = None


MEASUREMENT_FIELDS = tuple(f.name for f in fields(Measurement))
