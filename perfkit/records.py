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
    timing_note: str | None = None

    # -- work and rates (cost model, see perfkit.specs) ---------------------------------------------------------------
    flops: float | None = None  # per call of the pass; a multiply-add is 2 FLOPs
    gemm_flops: float | None = None
    bytes_min: float | None = None
    arithmetic_intensity_flops_per_byte: float | None = None
    images_per_s: float | None = None
    achieved_flops_per_s: float | None = None
    achieved_bytes_per_s: float | None = None

    # -- memory -------------------------------------------------------------------------------------------------------
    cpu_peak_rss_bytes: int | None = None  # peak resident set size of the process during the timed window
    cpu_memory_note: str | None = None


MEASUREMENT_FIELDS = tuple(f.name for f in fields(Measurement))
