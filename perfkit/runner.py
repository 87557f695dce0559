"""The runner: for each case, build, check against the reference, then time under monitors, and store the row.

Per case:
1. Skip (a row with status "skipped" and the reason) when the backend cannot run it here.
2. Build the backend's module from the parameters shared by every backend of the run.
3. Check correctness on fresh random inputs (at most `check_batch` images) against the torch backend in float64 on
   the CPU, which replays the backend's dropout masks and its max-pool and ReLU choices (perfkit.model). Over tolerance: status
   "incorrect", not timed, never shown as a speed result.
4. Time the pass on fresh inputs at the case's batch under the device's timer (CUDA events with the L2 flushed
   between repetitions unless the case option `hot_cache` is set; a CUDA-graph replay with the option `cuda_graph`),
   inside the memory monitors' window.
5. Energy: run the pass back to back, untimed and unflushed, for a sustained window as long as the energy monitors
   need (5 s with NVML, 1 s with RAPL alone), inside their window: energy, power timeline, clocks, temperatures and
   throttle reasons describe steady throughput, not the flushes between timed repetitions. Energy per image divides by
   the images of that window. With `RunnerConfig.energy` off (`--quick`), the window is skipped and those fields are
   None with the reason; where no energy counter is readable there is nothing to wait for and no window is run.
6. Derive rates from the cost model, and the roofline from the device's peaks (measured on first use, once per
   machine, device and dtype in a store: a later run on the same environment copies them into its own `device_peaks`
   rows, naming the run that measured them); append the row and its power samples to the store (committed
   together, at once).
Out-of-memory is recorded as "oom" and any other failure as "error" with its message; the run goes on. Every monitor
that began is ended (its sampling thread stopped) whatever happens in its window.

Workloads other than a variant's layers are registered in WORKLOADS by the layer name their cases carry: a case whose
layer is `augment` (perfkit.cases.AUGMENT) measures AlexNet's training augmentation of a batch instead of a layer
(perfkit.workloads.augment builds its work: the torch operators or the Triton kernel, checked against a float64 torch
reference with the same random draws), and the steps above time it the same way.
"""
from __future__ import annotations

import contextlib
import json
import math
import signal
import sys
import threading
import time
import zlib
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Sequence

import torch

from perfkit.backends import Backend, float32_precision, get_backend
from perfkit.cases import AUGMENT, NETWORK, Case
from perfkit.measure.compilewatch import CompileWatch
from perfkit.model import init_parameters, torch_dtype
from perfkit.measure.monitors import DEFAULT_POWER_INTERVAL_S, POWERCAP_ROOT, monitors_for
from perfkit.measure.peaks import measure_copy_bandwidth, measure_matmul_rate, roofline
from perfkit.support.progress import Progress
from perfkit.results.records import Measurement
from perfkit.specs import Network, build_network, parse_variant
from perfkit.results.store import Store, utc_now
from perfkit.measure.timer import TimingPolicy, timer_for
from perfkit.workload import (STOCK_ERROR_FACTOR, STRICT_DTYPES, TOLERANCES, Checked, Work, Workload, autocast_dtype,
                              check, make_inputs, reference_results, tolerance_for)


#: Why a row of a `--quick` run has no energy: its sustained window is skipped.
QUICK_ENERGY_NOTE = ("not measured: quick runs skip the sustained energy window (at least 5 s per case on a GPU, 1 s on "
                     "a CPU with RAPL)")


@dataclass
class CaseResult:
    """A study's own measurement of a case (see `Runner.measure_hook`): its row, and the training curve that belongs
    to it (objects with the columns of the store's `training_curves` table, e.g. perfkit.workloads.training.TrainingPoint),
    stored together."""

    row: Measurement
    training_curve: Sequence = ()


@dataclass(frozen=True)
class RunnerConfig:
    timing: TimingPolicy = field(default_factory=TimingPolicy)
    check_batch: int = 16  # images the correctness check runs on (the float64 CPU reference is slow)
    seed: int = 0  # parameters and inputs derive from it
    energy: bool = True  # run the sustained energy window where an energy counter is readable (off for --quick)
    power_interval_s: float = DEFAULT_POWER_INTERVAL_S  # the NVML power sampler's interval
    powercap_root: str = str(POWERCAP_ROOT)  # where RAPL's sysfs tree is (tests point it elsewhere)
    device_peaks: bool = True  # measure the devices' peaks for the roofline fields
    deadline: float | None = None  # time.monotonic() after which no new case starts (a time budget)
    precompile: bool = True  # compile the triton GPU cases' binaries in parallel before the first case
    energy_off_note: str = QUICK_ENERGY_NOTE  # why rows have no energy when `energy` is off
    #: estimate_s(case, timing) -> seconds: with a deadline, a case whose estimate would end past it is left for a
    #: rerun (a longer budget). perfkit.app.campaignplan.Estimator gives one.
    estimate_s: Callable[[Case, TimingPolicy], float] | None = None
    case_cap_s: float | None = None  # a case still running after this many seconds is stopped and recorded as such
    stop_at: float | None = None  # time.monotonic() at which a case in flight is stopped (the end of a budget)


def run_in_window(monitors: Sequence, body):
    """`body()` inside the monitors' window: (its result, the monitors' windows). Every monitor that began is ended,
    in reverse order, even when a `begin`, the body or another `end` fails; the first failure is then raised."""
    began = []
    try:
        for monitor in monitors:
            monitor.begin()
            began.append(monitor)
        result = body()
    except BaseException:
        for monitor in reversed(began):
            try:
                monitor.end()
            except Exception:  # the body's failure is the one to report
                pass
        raise
    windows, error = [], None
    for monitor in reversed(began):
        try:
            windows.append(monitor.end())
        except Exception as exc:
            error = error or exc
    if error is not None:
        raise error
    return result, windows[::-1]


@dataclass(frozen=True)
class WorkloadKind:
    """How the runner builds one kind of case's work: its row's layer kind, why it cannot run here (None: it can), and
    its check, timed call and cost (perfkit.workload.Work). Kinds are registered in WORKLOADS by the case's layer
    name; every other case is a layer (or a span of layers, or the whole network) of a variant."""

    layer_kind: Callable[[Runner, Case], str]
    unavailable_reason: Callable[[Case], str | None]
    work: Callable[[Runner, Case, Backend], Work]


def _layers_kind(runner: Runner, case: Case) -> str:
    if case.layer == NETWORK:
        return NETWORK
    return "+".join(s.kind for s in runner.network(case).span(case.layer))


def _augment_reason(case: Case) -> str | None:
    from perfkit.workloads import augment

    return augment.unavailable_reason(case)


def _augment_work(runner: Runner, case: Case, backend: Backend) -> Work:
    """AlexNet's training augmentation of a batch (perfkit.workloads.augment): the torch operators or the Triton
    kernel, checked against a float64 torch reference with the same random draws."""
    from perfkit.workloads import augment

    return augment.work(case, runner.config.check_batch, runner._input_seed(case, "check"),
                        runner._input_seed(case, "time"))


LAYERS = WorkloadKind(_layers_kind, lambda case: None, lambda runner, case, backend: runner._layer_work(case, backend))
#: The workloads that are not layers of a variant, by the layer name their cases carry.
WORKLOADS: dict[str, WorkloadKind] = {
    AUGMENT: WorkloadKind(lambda runner, case: AUGMENT, _augment_reason, _augment_work),
}


def workload_kind(case: Case) -> WorkloadKind:
    return WORKLOADS.get(case.layer, LAYERS)


def case_layers(network: Network, case: Case):
    """The layer specs a case runs: one layer, consecutive layers joined by "+" ("conv1+relu1": a backend that fuses
    runs them as one stage), or the whole network for the pass."""
    if case.layer == NETWORK:
        return network.layers_for(case.pass_name)
    return network.span(case.layer)


def case_cost(network: Network, case: Case, layers):
    """The cost model's work for a case: the network's pass, or the sum over the case's layers."""
    if case.layer == NETWORK:
        return network.cost(case.pass_name, case.batch, case.dtype)
    return sum((spec.cost(case.pass_name, case.batch, case.dtype) for spec in layers[1:]),
               layers[0].cost(case.pass_name, case.batch, case.dtype))


def _kernel_tuning(case: Case):
    """perfkit.kernels.tuning for a triton case on a GPU (its rows record the configs launched), else None."""
    if case.backend != "triton" or not case.device.startswith("cuda"):
        return None
    try:
        from perfkit.kernels import tuning
    except ImportError:
        return None
    return tuning


@contextlib.contextmanager
def cpu_threads(threads: int | None):
    """torch's intra-op thread count set to `threads` for the block (left alone when None)."""
    saved = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def timed_inputs_device(case: Case) -> str | None:
    """Where a case's timed inputs are drawn: on its GPU (a batch of 2**16 images is tens of GB, which would otherwise
    exist in host memory first), or on the CPU (None). The check's inputs are always drawn on the CPU, where its
    float64 reference runs."""
    return case.device if case.device.startswith("cuda") else None


def failure_fields(exc: BaseException) -> dict:
    """A failed case's status and note: "oom" for CUDA out-of-memory (its first line), else "error" with the
    exception."""
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return {"status": "oom", "note": f"out of memory: {str(exc).splitlines()[0]}"}
    return {"status": "error", "note": f"{type(exc).__name__}: {exc}"[:2000]}


def case_row(case: Case, run_id: str, study: str, env_id: str, layer_kind: str) -> Measurement:
    """A row for `case` with its identity filled in and nothing measured yet."""
    return Measurement(
        run_id=run_id, case_key=case.key, study=study, variant=case.variant, layer=case.layer, layer_kind=layer_kind,
        backend=case.backend, is_baseline=get_backend(case.backend).is_baseline, device=case.device, dtype=case.dtype,
        batch=case.batch, pass_name=case.pass_name, activation=case.activation,
        options=json.dumps(dict(case.options), sort_keys=True, default=str), env_id=env_id, threads=case.threads)


def device_name(device: str, env: dict) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return env.get("cpu_model") or "CPU"


class CaseTimeLimit(BaseException):
    """Raised inside a case that ran past its time cap (a BaseException, so that no `except Exception` on the way
    out of the case's code swallows it)."""


@contextlib.contextmanager
def time_cap(seconds: float | None):
    """Raise CaseTimeLimit in this thread once `seconds` of wall time have passed inside the block (SIGALRM; only in
    the main thread, elsewhere the block runs uncapped). The check runs between Python bytecodes, so a single long
    native call (one kernel, one compile step) ends before the case stops."""
    if seconds is None or threading.current_thread() is not threading.main_thread() or \
            not hasattr(signal, "setitimer"):
        yield
        return

    def expire(signum, frame):
        raise CaseTimeLimit(f"stopped after {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.001))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class Runner:
    """Measures cases into one run of a store."""

    def __init__(self, store: Store, run_id: str, study: str, env: dict, env_id: str,
                 config: RunnerConfig = RunnerConfig(), show_progress: bool = True,
                 measure_hook: Callable[[Case, Runner], CaseResult | None] | None = None,
                 after_case: Callable[[Measurement], None] | None = None):
        """`measure_hook(case, runner)`: a study's own way of measuring the cases the check-and-time path does not
        cover (a training run); it returns a CaseResult, or None to hand the case to the runner. What it raises is
        recorded as the case's error, and the run goes on. `after_case(row)` is called after each row is stored (the
        campaign rewrites its exports there, so that its folder is current after every case)."""
        self.store = store
        self.measure_hook = measure_hook
        self.after_case = after_case
        self.run_id = run_id
        self.study = study
        self.env = env
        self.env_id = env_id
        self.config = config
        self.show_progress = show_progress
        self._networks: dict = {}
        self._parameters: dict = {}
        self._references: dict = {}
        self._peaks: dict = {}
        self.last_power_samples: list = []  # the power timeline of the last case measured
        self.cases_not_run = 0  # cases the last run() left out at its deadline

    # -- the loop ---------------------------------------------------------------------------------------------------
    def run(self, cases: Sequence[Case]) -> list[Measurement]:
        """Measure every case the run does not have yet, storing each row as it finishes. With a deadline, cases
        not started by then are left out (counted in `cases_not_run`), so the run can be resumed later; cases that
        would only be recorded as skipped (no GPU, say) are still recorded, with their reason."""
        done = self.store.finished_case_keys(self.run_id)
        seen, todo = set(done), []
        for case in cases:
            if case.key not in seen:
                seen.add(case.key)
                todo.append(case)
        self.precompile(todo)
        progress = Progress(len(todo), title=self.study, enabled=self.show_progress)
        rows = []
        self.cases_not_run = 0
        try:
            for case in todo:
                if self._past_deadline(case):
                    self.cases_not_run += 1  # not stored: a rerun of the run measures it
                    continue
                progress.start(case.label)
                row, by_hook, curve = self._measure_capped(case)
                if by_hook:
                    self.store.add_measurement(row, training_curve=curve)
                else:
                    self.store.add_measurement(row, self.last_power_samples if row.status == "ok" else ())
                rows.append(row)
                progress.done(row.status, _progress_detail(row))
                if self.after_case is not None:
                    self.after_case(row)
        finally:
            progress.close()
        return rows

    def _past_deadline(self, case: Case) -> bool:
        """Whether a case is left for a rerun: the deadline has passed, or (with an estimator) its estimate would end
        past it. A case that would only be recorded as skipped never is."""
        deadline = self.config.deadline
        if deadline is None or self._would_skip(case):
            return False
        now = time.monotonic()
        if now >= deadline:
            return True
        return bool(self.config.estimate_s is not None
                    and now + self.config.estimate_s(case, self.config.timing) > deadline)

    def _measure_capped(self, case: Case) -> tuple[Measurement, bool, Sequence]:
        """(row, measured by the study's hook, training curve) for one case, under its time cap: the sooner of
        `case_cap_s` from now and `stop_at`. A case stopped there is an error that says so, never a speed result."""
        caps = [c for c in (self.config.case_cap_s,
                            None if self.config.stop_at is None else self.config.stop_at - time.monotonic())
                if c is not None]
        cap = min(caps) if caps else None
        started = utc_now()
        try:
            with time_cap(cap):
                result = self._measure_by_hook(case) if self.measure_hook else None
                if result is not None:
                    return result.row, True, result.training_curve
                return self.measure(case), False, ()
        except CaseTimeLimit as stop:
            if case.device.startswith("cuda") and torch.cuda.is_available():
                torch.cuda.synchronize()
                torch.cuda.empty_cache()
            if case.backend == "compile":
                torch._dynamo.reset()  # a compile stopped halfway leaves nothing for the next case
            self.last_power_samples = []
            try:
                row = self.blank_row(case)
            except (KeyError, ValueError) as bad:
                return self._bad_case_row(case, started, str(bad)), False, ()
            cap_reason = "its time cap" if cap == self.config.case_cap_s else "the end of the time budget"
            return replace(row, status="error", note=f"{stop} ({cap_reason}); not a speed result",
                           started_at=started, finished_at=utc_now()), False, ()

    def precompile(self, cases: Sequence[Case]) -> None:
        """Compile the binaries of the triton GPU cases on every host core before the first is timed (perfkit.
        triton_binaries.precompile_cases), so that no case waits for serial compiles. A failure here is reported and the
        cases compile on first use instead."""
        wanted = [c for c in cases if c.backend == "triton" and c.device.startswith("cuda")]
        if not self.config.precompile or not wanted or not torch.cuda.is_available():
            return
        from perfkit.backends.triton_binaries import precompile_cases

        try:
            precompile_cases(wanted, self.config.check_batch)
        except Exception as exc:  # the run goes on: the kernels compile when first launched
            print(f"perfkit: precompile failed ({type(exc).__name__}: {exc}); kernels compile on first use",
                  file=sys.stderr)

    def _would_skip(self, case: Case) -> bool:
        """Whether the case would only be recorded as skipped (which costs nothing, so a deadline does not stop it):
        a pass the backend has, on a device or dtype it cannot run here. A pass it does not declare may be a study's
        own (measure_case: the activations study's training runs), whose cost is unknown."""
        try:
            backend = get_backend(case.backend)
        except ValueError:
            return False
        return case.pass_name in backend.passes and \
            backend.unavailable_reason(case.device, case.dtype, case.pass_name) is not None

    # -- one case ---------------------------------------------------------------------------------------------------
    def network(self, case: Case) -> Network:
        key = (case.variant, case.activation)
        if key not in self._networks:
            self._networks[key] = build_network(case.variant, case.activation)
        return self._networks[key]

    def shared_parameters(self, case: Case) -> dict[str, torch.Tensor]:
        """The parameters every backend of a case's network shares. Ablations of a variant (perfkit.specs.ABLATIONS)
        have its parameters, names and values alike, so they share one set."""
        base, _ = parse_variant(case.variant)
        key = (base, case.activation)
        if key not in self._parameters:
            self._parameters[key] = init_parameters(build_network(base, case.activation), seed=self.config.seed)
        return self._parameters[key]

    def blank_row(self, case: Case) -> Measurement:
        kind = workload_kind(case).layer_kind(self, case)
        return case_row(case, self.run_id, self.study, self.env_id, kind)

    def _bad_case_row(self, case: Case, started: str, note: str) -> Measurement:
        """The row of a case that names an unknown variant, layer or backend: recorded as an error."""
        return Measurement(run_id=self.run_id, case_key=case.key, study=self.study, variant=case.variant,
                           layer=case.layer, layer_kind="unknown", backend=case.backend, is_baseline=False,
                           device=case.device, dtype=case.dtype, batch=case.batch, pass_name=case.pass_name,
                           activation=case.activation, options="{}", env_id=self.env_id, status="error",
                           note=note, started_at=started, finished_at=utc_now())

    def _measure_by_hook(self, case: Case) -> CaseResult | None:
        started = utc_now()
        self.last_power_samples = []
        try:
            result = self.measure_hook(case, self)
        except Exception as exc:  # recorded like the runner's own failures, and the run goes on
            try:
                row = replace(self.blank_row(case), **failure_fields(exc))
            except (KeyError, ValueError) as bad:
                row = self._bad_case_row(case, started, str(bad))
            result = CaseResult(row)
        finally:
            if case.device.startswith("cuda") and torch.cuda.is_available():
                torch.cuda.empty_cache()
        if result is not None:
            result.row.started_at = result.row.started_at or started
            result.row.finished_at = result.row.finished_at or utc_now()
        return result

    def measure(self, case: Case) -> Measurement:
        started = utc_now()
        self.last_power_samples = []
        try:
            row = self.blank_row(case)
        except (KeyError, ValueError) as exc:  # an unknown variant, layer or backend: a bad case, recorded
            return self._bad_case_row(case, started, str(exc))
        row.started_at = started
        backend = get_backend(case.backend)
        reason = backend.unavailable_reason(case.device, case.dtype, case.pass_name)
        if not reason and case.option("autocast", False) and not backend.supports_autocast:
            reason = f"the {case.backend} backend does not run under torch.autocast (it runs its dtype natively)"
        if not reason:
            reason = workload_kind(case).unavailable_reason(case)
        if reason:
            return replace(row, status="skipped", note=reason, finished_at=utc_now())
        try:
            row.device_name = device_name(case.device, self.env)
            tuning = _kernel_tuning(case)
            if tuning is not None:
                tuning.reset_configs_used()
            with cpu_threads(case.threads), float32_precision(case.dtype), CompileWatch() as watch:
                row.threads = torch.get_num_threads()
                row = self._check_and_time(case, backend, row)
                if case.backend == "compile":
                    row = _compile_verdict(row, watch.dynamo_graphs)
            if tuning is not None:
                row = replace(row, autotune_policy=tuning.autotune_policy(),
                              kernel_configs=json.dumps(tuning.configs_used(), sort_keys=True))
        except Exception as exc:  # recorded, and the run goes on
            row = replace(row, **failure_fields(exc))
        finally:
            if case.device.startswith("cuda"):
                torch.cuda.empty_cache()
        row.finished_at = utc_now()
        return row

    def _input_seed(self, case: Case, purpose: str) -> int:
        """Inputs are the same for every backend, device and dtype of one layer, pass and batch."""
        ident = f"{purpose}/{case.variant}/{case.activation}/{case.layer}/{case.pass_name}/{case.batch}"
        return self.config.seed * 1_000_003 + zlib.crc32(ident.encode())

    def _layer_work(self, case: Case, backend: Backend) -> Work:
        """A layer (or the whole network) on the case's backend: checked against the torch backend in float64 on the
        CPU with the same parameters, inputs and dropout masks."""
        network = self.network(case)
        layers = case_layers(network, case)
        params = self.shared_parameters(case)
        autocast = autocast_dtype(case)  # under autocast the module and its inputs stay float32
        dtype = torch.float32 if autocast is not None else torch_dtype(case.dtype)
        module = backend.build(layers, params, case.device, dtype)

        def check_once() -> Checked:
            check_batch = min(case.batch, self.config.check_batch)
            inputs = make_inputs(layers, check_batch, self._input_seed(case, "check"))
            module.capture_for_reference = True
            got = Workload(module, case.pass_name, inputs, case.device, dtype, backend.make_optimizer,
                           autocast).run_once()
            module.capture_for_reference = False
            masks = dict(module.captured_dropout_masks)
            choices = dict(module.captured_choices)
            module.captured_dropout_masks.clear()
            module.captured_choices.clear()
            want = self._reference(case, layers, params, inputs, masks, check_batch, choices)
            error, worst = check(got, want)
            del got
            stock_error, stock_note = self._stock_error(case, backend, error, layers, params, inputs, masks, choices,
                                                       want, dtype, autocast)
            return Checked(error, worst, check_batch, tolerance_for(case.dtype, stock_error), stock_note)

        def timed():
            inputs = make_inputs(layers, case.batch, self._input_seed(case, "time"), device=timed_inputs_device(case))
            workload = Workload(module, case.pass_name, inputs, case.device, dtype, backend.make_optimizer, autocast)
            return workload.run, workload.prepare

        return Work(check_once, timed, case_cost(network, case, layers))

    def work(self, case: Case, backend: Backend) -> Work:
        """What the runner checks and times for `case` (perfkit.workload.Work): its check, its timed call, its cost.
        The timer self-check (perfkit.app.selfcheck) times the very same calls."""
        return workload_kind(case).work(self, case, backend)

    def _check_and_time(self, case: Case, backend: Backend, row: Measurement) -> Measurement:
        work = self.work(case, backend)

        # 1. correctness against the reference
        checked = work.check()
        error, worst, tolerance = checked.error, checked.worst, checked.tolerance
        basis = f"worst tensor: {worst}" + (f"; {checked.tolerance_note}" if checked.tolerance_note else "")
        row = replace(row, error_rel=error, error_tolerance=tolerance, error_batch=checked.images, error_note=basis)
        if not (math.isfinite(error) and error <= tolerance):
            return replace(row, status="incorrect",
                           note=f"not timed: error {error:.3g} in {worst} exceeds the {case.dtype} tolerance "
                                f"{tolerance:g}")

        # 2. timing, under the memory monitors. One untimed call at the timed batch comes first, outside every
        # window: autotuning (and its buffers), compilation for this shape and the allocator's first growth then
        # fall outside the memory peaks and the timed repetitions.
        run, prepare = work.timed()
        if prepare:
            prepare()
        run()
        if case.device.startswith("cuda"):
            torch.cuda.synchronize(case.device)
        monitors = monitors_for(case.device, self.config.power_interval_s, self.config.powercap_root)
        sustained = [m for m in monitors if m.min_window_s > 0]
        timer = timer_for(case.device)
        graph_used, graph_note = False, None
        if case.option("cuda_graph"):
            run, graph_used, graph_note = timer.cuda_graph(run, prepare)
        with CompileWatch() as in_window:
            timing, windows = run_in_window(
                [m for m in monitors if m.min_window_s == 0],
                lambda: timer.measure(run, prepare, self.config.timing, hot_cache=bool(case.option("hot_cache"))))
            images = None
            if sustained and self.config.energy:
                seconds = max(m.min_window_s for m in sustained)
                calls, energy_windows = run_in_window(sustained, lambda: timer.repeat_for(run, prepare, seconds))
                windows += energy_windows
                images = calls * case.batch
                for monitor in sustained:
                    self.last_power_samples.extend(getattr(monitor, "samples", ()))
        fields = timing.record_fields()
        fields["cuda_graph"] = graph_used
        fields["timing_note"] = "; ".join(n for n in (fields["timing_note"], graph_note) if n) or None

        # 3. energy, power and GPU state over a sustained window (run above, inside the same compile watch)
        if sustained and not self.config.energy:
            windows += [m.unmeasured(self.config.energy_off_note) for m in sustained]
        for window in windows:
            row = replace(row, **asdict(window))
        row = replace(row, **fields, **_compiles_in_window(case, in_window))
        if row.compiles_in_window:
            row.timing_note = "; ".join(n for n in (row.timing_note, "flagged: " + row.compile_note) if n)
        if row.energy_j is not None and images:
            if prepare is None:
                row = replace(row, energy_per_image_j=row.energy_j / images, images_per_j=images / row.energy_j)
            else:
                row.energy_note = "; ".join(n for n in (row.energy_note, (
                    "energy_j includes the untimed forward each backward repetition needs; no energy per image"))
                    if n)

        # 4. rates from the cost model, and the roofline from the device's peaks
        cost = work.cost
        seconds = timing.median_s
        achieved = cost.flops / seconds if seconds > 0 else None
        peak = self.device_peak(case.device, case.dtype, row.device_name)
        bound, fraction, note = roofline(achieved, cost.arithmetic_intensity, peak.get("matmul_flops_per_s"),
                                         peak.get("copy_bytes_per_s"))
        if peak.get("note") and (bound is None or fraction is None):
            note = f"{note} ({peak['note']})"
        return replace(row, status="ok", flops=cost.flops, gemm_flops=cost.gemm_flops, bytes_min=cost.bytes_min,
                       arithmetic_intensity_flops_per_byte=cost.arithmetic_intensity,
                       images_per_s=case.batch / seconds if seconds > 0 else None,
                       achieved_flops_per_s=achieved,
                       achieved_bytes_per_s=cost.bytes_min / seconds if seconds > 0 else None,
                       peak_flops_per_s=peak.get("matmul_flops_per_s"), peak_bytes_per_s=peak.get("copy_bytes_per_s"),
                       roofline_bound_flops_per_s=bound, roofline_fraction=fraction, roofline_note=note)

    # -- device peaks -----------------------------------------------------------------------------------------------
    def device_peak(self, device: str, dtype: str, name: str | None) -> dict:
        """The device's measured peaks for `dtype` in this run, at the current torch thread count (a CPU's peaks
        depend on it): from memory, else from the store (a resumed run), else measured now and stored. The copy
        bandwidth is measured once per device (and thread count, on a CPU) and shared by its dtypes. A failed
        measurement leaves its value None, with the reason in `note`."""
        threads = torch.get_num_threads()
        key = (device, dtype, threads)
        if key in self._peaks:
            return self._peaks[key]
        stored = self.store.device_peaks(self.run_id)
        if key in stored:
            self._peaks[key] = stored[key]
            return stored[key]
        earlier = self.store.machine_device_peaks(self.env_id).get(key)
        if earlier is not None:  # measured by an earlier run on this machine: once per store, not once per run
            peak = {**earlier, "run_id": self.run_id,
                    "method": f"{earlier['method']} (measured by run {earlier['run_id']} at {earlier['measured_at']})"}
            self.store.add_device_peak(peak)
            self._peaks[key] = peak
            return peak
        if not self.config.device_peaks:
            return {"note": "device peaks not measured (RunnerConfig.device_peaks is off)"}
        peak = {"run_id": self.run_id, "device": device, "device_name": name, "dtype": dtype, "threads": threads,
                "matmul_flops_per_s": None, "copy_bytes_per_s": None, "measured_at": utc_now()}
        methods, notes = [], []
        try:
            peak["matmul_flops_per_s"], method = measure_matmul_rate(device, dtype)
            methods.append(method)
        except Exception as exc:  # the rows still stand; their roofline says why it is missing
            notes.append(f"matmul rate not measured: {type(exc).__name__}: {exc}"[:500])
        gpu = device.startswith("cuda")
        known = [p for (d, _, t), p in {**stored, **self._peaks}.items()
                 if d == device and (gpu or t == threads) and p.get("copy_bytes_per_s")]
        if known:
            peak["copy_bytes_per_s"] = known[0]["copy_bytes_per_s"]
            methods.append(f"copy bandwidth as measured for {known[0]['dtype']}")
        else:
            try:
                peak["copy_bytes_per_s"], method = measure_copy_bandwidth(device)
                methods.append(method)
            except Exception as exc:
                notes.append(f"copy bandwidth not measured: {type(exc).__name__}: {exc}"[:500])
        if gpu:
            torch.cuda.empty_cache()
        peak["method"] = "; ".join(methods) or None
        peak["note"] = "; ".join(notes) or None
        self.store.add_device_peak(peak)
        self._peaks[key] = peak
        return peak

    def _stock_error(self, case, backend, error, layers, params, inputs, masks, choices, want, dtype, autocast):
        """Stock PyTorch's error on this case in its dtype (reduced precision only; see workload.STOCK_ERROR_FACTOR),
        and a note saying how the tolerance was set. The torch backend's own error is its stock error."""
        if case.dtype in STRICT_DTYPES:
            return None, None
        if backend.is_baseline:
            stock = error
        else:
            try:
                torch_backend = get_backend("torch")
                module = torch_backend.build(layers, params, case.device, dtype)
                module.replay_dropout_masks = masks  # the same masks and choices (perfkit.model) the checked backend
                module.replay_choices = choices or None  # made
                got = Workload(module, case.pass_name, inputs, case.device, dtype, torch_backend.make_optimizer,
                               autocast).run_once()
                stock, _ = check(got, want)
            except Exception as exc:  # the fixed tolerance then applies, and the row says why
                return None, f"fixed tolerance: stock PyTorch could not run this case ({type(exc).__name__}: {exc})"
        if not math.isfinite(stock):
            return None, "fixed tolerance: stock PyTorch's own error is not finite"
        return stock, (f"tolerance max({TOLERANCES[case.dtype]:g}, {STOCK_ERROR_FACTOR:g} x stock PyTorch's error "
                       f"{stock:.3g} in {case.dtype}{' autocast' if autocast is not None else ''})")

    def _reference(self, case, layers, params, inputs, masks, check_batch, choices=None):
        active_dropout = any(spec.kind == "dropout" and spec.p > 0 for spec in layers)
        # The reference replays the backend's choices (perfkit.model): backends that chose alike share it.
        chosen = tuple(sorted((name, zlib.crc32(t.numpy().tobytes())) for name, t in (choices or {}).items()))
        key = (case.variant, case.activation, case.layer, case.pass_name, check_batch, chosen)
        if not active_dropout and key in self._references:
            return self._references[key]
        want = reference_results(layers, case.pass_name, params, inputs, masks, get_backend("torch").make_optimizer,
                                 choices)
        # One entry: a network's float64 gradients are ~1 GB, and studies list a case's backends next to each other.
        self._references = {key: want} if not active_dropout else {}
        return want


def _compile_verdict(row: Measurement, graphs: int) -> Measurement:
    """A compile row records the graphs dynamo captured for it; one that captured none ran eager code and is an
    error with that reason, never a speed result."""
    row = replace(row, graphs_compiled=graphs)
    if row.status == "ok" and graphs == 0:
        return replace(row, status="error",
                       note="torch.compile captured no graph for this case: dynamo ran it eagerly (recompile limit or "
                            "a fallback), so its timing is not of compiled code")
    return row


def _compiles_in_window(case: Case, watch: CompileWatch) -> dict:
    """The row's count of compilations inside its timed repetitions and energy window, flagged in its timing note
    when any happened. A triton row run by the interpreter (or an old triton) cannot be counted: None, with why."""
    if case.backend == "triton" and watch.triton_binaries is None:
        return {"compiles_in_window": None, "compile_note": f"compiles not counted: {watch.triton_note}"}
    count = watch.total()
    fields = {"compiles_in_window": count}
    if count:
        fields["compile_note"] = (f"{count} compilation(s) inside the timed repetitions or energy window: this row's "
                                  "timing includes compile time")
    return fields


def calls_only_runner(config: RunnerConfig | None = None) -> Runner:
    """A runner used only to build the calls it would time (`Runner.work`) outside a study: no store, no run, nothing
    recorded (the timer self-check and the ncu child use it)."""
    return Runner(store=None, run_id="unstored", study="unstored", env={}, env_id="unstored",
                  config=config or RunnerConfig(precompile=False, device_peaks=False), show_progress=False)


def _progress_detail(row: Measurement) -> str:
    if row.status == "ok" and row.time_median_s is not None:
        return f"{row.time_median_s * 1e3:.3f} ms, {row.images_per_s:,.0f} img/s"
    return row.note or ""
