"""The benchmark regression gate's arithmetic: pytest-benchmark JSON in, verdicts out. It never imports torch.

The gate: the working tree against a reference commit, side by side (A/B)
--------------------------------------------------------------------------
`perfkit bench check` runs the suite of the working tree (side A) and the suite of a reference commit (side B, from a
git worktree) on the same machine in the same job, in interleaved rounds: one round is one pytest run of one side over
the suite, and the rounds go A B, B A, A B, B A (each pair in the other order). Why side by side: across CPU models a GEMM and a memory-bound op do not scale
together (an Intel Xeon with AMX ran the convolutions 2x faster and the activations 2x slower, relative to each other,
than the AMD EPYC that recorded the old committed baseline), so no calibration and no suite median carries seconds
from one machine model to another. Measuring both sides here, now, needs neither. `asv continuous` and pyperf's
`compare_to` work the same way.

Per case (`ab_compare`):
- each round's time is the case's fastest round of calls in that pytest run (`min`, which noise can only push up), per
  call: the suite may make several calls per round for a case too short to time alone (`calls_per_round`);
- the statistic is the median over the pairs of the ratio A / B, reported with its range over the pairs; with an even
  number of pairs in A B, B A order a steady drift of the machine cancels, and one pair hit by a burst of load does
  not move a median of four;
- its limit is `AB_FLOOR` (15%) unless the case's noise measured in the same run says more: the spread of its pair
  ratios with the most outlying pair left out (in an A/A run, the A/A noise itself), times `AB_NOISE_MULTIPLE`,
  capped at `AB_CEILING`;
- over its limit the case is a suspect; `perfkit bench check` reruns the suspects, both sides interleaved again, and
  a case fails only if it stays over its limit on every attempt;
- a case whose work differs between the sides (batch, dtype, calls per round... `SIGNATURE_KEYS`) is "changed", a case
  only one side timed is "new" or "missing", and one missing from some rounds is "incomplete": none of them is gated,
  and each is listed with its reason.

Measured on a 2-core AMD EPYC (family 23 model 49) VM, the 48 CPU cases, 4 pairs, 2 confirmation reruns at most:
five A/A checks of unchanged code passed, their worst case within its limit at 1.08x to 1.28x; five checks with
conv2 slowed by the injected 30% failed, each naming exactly conv2's forward and train_step at 1.20x to 1.33x. A
check takes 5 to 7 minutes (`the check took N s` in its report).

A calibration GEMM timed beside each case does not help here: tried, its own time differed by 10% between two
processes running the same code (a 256x256 GEMM is sensitive to where its pages land in a 512 KiB L2), and dividing
by it moved every case of a round by as much.

History: per-machine baselines
------------------------------
`perfkit bench baseline` still writes a baseline file per machine model (tests/benchmarks/baselines/cpu.json, and one
per GPU model): a pytest-benchmark JSON with a `perfkit_baseline` section holding, per case, the median time
normalized by a calibration GEMM timed beside each case, and its spread over several runs. The dashboard's regression
section reads these with the saved history. The A/B gate never depends on them. `compare` gates a run against such a
baseline only when both come from the same machine model (CPU model, family and model numbers, instruction-set
extensions, core count, GPU); against a baseline from another machine it returns a result that is not comparable, so
that it can neither fail nor pass blindly.
"""
from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

SCHEMA = 1
STATISTIC = "min"
NORMALIZATION = "case min per call / run calibration GEMM (fastest sample of the run)"

#: History gate, per-case limit: max(FLOOR, NOISE_MULTIPLE * the baseline's spread), capped at CEILING. A case is a
#: suspect when its suite-relative ratio to the baseline exceeds 1 + limit.
FLOOR = 0.15
NOISE_MULTIPLE = 2.0
CEILING = 1.0
#: The suite factor (median ratio of every case to the baseline) may not exceed 1 + this.
SUITE_LIMIT = 0.25
#: Below this many compared cases the suite factor is not computed (taken as 1): a median of a few is no reference.
MIN_CASES_FOR_SUITE_FACTOR = 5


# -- normalization (used by the suite's pytest_benchmark_update_json hook, and here) -----------------------------------
def run_calibration(benchmarks: list[dict]) -> dict[str, float]:
    """The run's calibration per device: the fastest calibration sample of any case on it."""
    out: dict[str, float] = {}
    for bench in benchmarks:
        info = bench.get("extra_info") or {}
        device, value = info.get("device"), info.get("calib_gemm_s")
        if device and isinstance(value, (int, float)) and value > 0:
            out[device] = min(out.get(device, math.inf), value)
    return out


def normalize(bench: dict, calibration: dict[str, float]) -> dict | None:
    """What the gate compares for one benchmark entry: its `min` over the run's calibration for its device."""
    info = bench.get("extra_info") or {}
    stats = bench.get("stats") or {}
    calib = calibration.get(info.get("device"))
    value = stats.get(STATISTIC)
    if not calib or value is None:
        return None
    value /= info.get("calls_per_round") or 1  # per call, as the suite's cases may make several calls a round
    return {"statistic": STATISTIC, "time_s": value, "calibration_s": calib, "normalized": value / calib}


def annotate(output_json: dict, inject: dict | None = None) -> dict:
    """Add perfkit's normalized numbers to a pytest-benchmark JSON document (in place; also returned)."""
    benchmarks = output_json.get("benchmarks", [])
    calibration = run_calibration(benchmarks)
    for bench in benchmarks:
        normalized = normalize(bench, calibration)
        if normalized is not None:
            bench["perfkit"] = normalized
    output_json["perfkit"] = {"schema": SCHEMA, "statistic": STATISTIC, "normalization": NORMALIZATION,
                              "calibration_s": calibration, "inject": inject or None}
    return output_json


def normalized_values(doc: dict) -> dict[str, float]:
    """{fullname: normalized time} of a run's JSON (annotated by the suite, or annotated now)."""
    if not all("perfkit" in b for b in doc.get("benchmarks", [])):
        doc = annotate(json.loads(json.dumps(doc)))
    return {b["fullname"]: b["perfkit"]["normalized"] for b in doc.get("benchmarks", []) if "perfkit" in b}


# -- baselines --------------------------------------------------------------------------------------------------------
def make_baseline(runs: list[dict]) -> dict:
    """A baseline from several runs of the suite: the last run's JSON (timing data dropped) plus, per case, the median
    normalized time and its spread ((max - min) / median) over the runs."""
    if not runs:
        raise ValueError("a baseline needs at least one run")
    for run in runs:
        inject = (run.get("perfkit") or {}).get("inject")
        if inject:
            raise ValueError(f"refusing to make a baseline from a run with an injected slowdown ({inject})")
    values = [normalized_values(run) for run in runs]
    names = [name for name in values[-1] if all(name in v for v in values)]
    cases = {}
    for name in names:
        samples = [v[name] for v in values]
        median = statistics.median(samples)
        cases[name] = {"normalized": median, "spread": (max(samples) - min(samples)) / median,
                       "samples": samples}
    doc = json.loads(json.dumps(runs[-1]))
    for bench in doc.get("benchmarks", []):
        (bench.get("stats") or {}).pop("data", None)
    doc["perfkit_baseline"] = {"schema": SCHEMA, "runs": len(runs), "statistic": STATISTIC,
                               "normalization": NORMALIZATION, "machine": machine_key(runs[-1]), "cases": cases}
    return doc


def machine_key(doc: dict) -> dict:
    """What must match for a baseline to count as this machine's."""
    info = (doc.get("machine_info") or {}).get("perfkit") or {}
    gpus = info.get("gpus") or []
    return {"cpu_model": info.get("cpu_model"), "cpu_family_model": info.get("cpu_family_model"),
            "cpu_isa": info.get("cpu_isa"), "cpu_count_logical": info.get("cpu_count_logical"),
            "gpu": gpus[0]["name"] if gpus else None}


def baseline_device_name(doc: dict) -> str:
    """The device a run or baseline measured: "cpu", or "cuda-<gpu model>" for a run of the GPU half."""
    devices = {(b.get("extra_info") or {}).get("device") for b in doc.get("benchmarks", [])}
    if "cuda" in devices:
        names = {(b.get("extra_info") or {}).get("device_name") for b in doc["benchmarks"]
                 if (b.get("extra_info") or {}).get("device") == "cuda"}
        return "cuda-" + slug(min(n for n in names if n) if any(names) else "gpu")
    return "cpu"


def slug(text: str) -> str:
    return "-".join("".join(c.lower() if c.isalnum() else " " for c in text).split())


# -- the gate ---------------------------------------------------------------------------------------------------------
@dataclass
class CaseResult:
    name: str
    normalized: float | None
    baseline: float | None
    ratio: float | None  # normalized / baseline / suite factor
    limit: float | None
    verdict: str  # "ok", "regressed", "faster", "new", "missing"
    attempts: list[float] = field(default_factory=list)  # ratios of each attempt (the confirmation rerun appends)

    @property
    def short(self) -> str:
        return self.name.split("::")[-1]


@dataclass
class GateResult:
    cases: list[CaseResult]
    suite_factor: float
    suite_limit: float
    foreign: list[str]  # how the machine differs from the baseline's (empty: same machine)
    notes: list[str] = field(default_factory=list)

    @property
    def regressed(self) -> list[CaseResult]:
        return [c for c in self.cases if c.verdict == "regressed"]

    @property
    def suite_regressed(self) -> bool:
        return self.suite_factor > 1 + self.suite_limit

    @property
    def comparable(self) -> bool:
        """False when the baseline comes from another machine model: then the ratios decide nothing."""
        return not self.foreign

    @property
    def passed(self) -> bool:
        return self.comparable and not self.regressed and not self.suite_regressed


def compare(run: dict, baseline: dict, *, floor: float | None = None) -> GateResult:
    """Gate one run against a baseline (both pytest-benchmark JSON documents). Against a baseline from another machine
    model the arithmetic is still done (`foreign` says how the machines differ) but the result is not comparable:
    `passed` is False and `format_report` says NOT GATED, never PASSED or FAILED."""
    base = (baseline.get("perfkit_baseline") or {}).get("cases")
    if base is None:
        raise ValueError("the baseline file has no perfkit_baseline section; make it with `perfkit bench baseline`")
    inject = (run.get("perfkit") or {}).get("inject")
    notes = [f"this run has an injected slowdown: {inject}"] if inject else []
    foreign = _differences(machine_key(baseline), machine_key(run))
    if floor is None:
        floor = FLOOR
    current = normalized_values(run)
    raw = {name: current[name] / base[name]["normalized"] for name in current if name in base}
    suite_factor = statistics.median(raw.values()) if len(raw) >= MIN_CASES_FOR_SUITE_FACTOR else 1.0
    cases = []
    for name, value in current.items():
        if name not in base:
            cases.append(CaseResult(name, value, None, None, None, "new"))
            continue
        ratio = raw[name] / suite_factor
        limit = case_limit(base[name].get("spread", 0.0), floor)
        verdict = "regressed" if ratio > 1 + limit else "faster" if ratio < 1 / (1 + limit) else "ok"
        cases.append(CaseResult(name, value, base[name]["normalized"], ratio, limit, verdict, [ratio]))
    for name in base:
        if name not in current:
            cases.append(CaseResult(name, None, base[name]["normalized"], None, None, "missing"))
    return GateResult(cases, suite_factor, SUITE_LIMIT, foreign, notes)


def case_limit(spread: float, floor: float = FLOOR) -> float:
    return min(CEILING, max(floor, NOISE_MULTIPLE * spread))


def confirm(result: GateResult, rerun: dict, baseline: dict) -> GateResult:
    """Fold a rerun of the suspects into `result`: a case stays regressed only if the rerun is over its limit too.
    The rerun's ratios are divided by the first run's suite factor (a rerun of a few cases has no median of its own)."""
    base = baseline["perfkit_baseline"]["cases"]
    again = normalized_values(rerun)
    for case in result.cases:
        if case.verdict != "regressed":
            continue
        if case.name not in again:
            result.notes.append(f"{case.short}: not in the confirmation rerun; kept as regressed")
            continue
        ratio = again[case.name] / base[case.name]["normalized"] / result.suite_factor
        case.attempts.append(ratio)
        case.ratio = min(case.attempts)
        case.normalized = min(case.normalized, again[case.name])
        if case.ratio <= 1 + case.limit:
            case.verdict = "ok"
            attempts = ", ".join(f"{a:.2f}x" for a in case.attempts)
            result.notes.append(f"{case.short}: over its {1 + case.limit:.2f}x limit, then within it on rerun "
                                f"{len(case.attempts) - 1} ({attempts}): noise, not a regression")
    return result


MACHINE_KEYS = ("cpu_model", "cpu_family_model", "cpu_isa", "cpu_count_logical", "gpu")


def _differences(base: dict, now: dict) -> list[str]:
    return [f"{key}: baseline {base.get(key)!r}, this machine {now.get(key)!r}"
            for key in MACHINE_KEYS if base.get(key) != now.get(key)]


# -- the history gate's report -----------------------------------------------------------------------------------------
def format_report(result: GateResult, *, show: int = 12) -> str:
    lines = []
    if result.foreign:
        lines.append("note: the baseline was recorded on another machine model (" + "; ".join(result.foreign) + "); "
                     "the ratios below are for information only and decide nothing.")
    compared = [c for c in result.cases if c.ratio is not None]
    compared.sort(key=lambda c: -c.ratio)
    shown = [c for c in compared if c.verdict == "regressed"] + [c for c in compared if c.verdict != "regressed"]
    shown = shown[:max(show, len(result.regressed))]
    width = max([len(c.short) for c in shown] + [9])
    lines.append(f"{'benchmark':<{width}}  {'ratio':>6}  {'limit':>6}  {'attempts':<14} verdict")
    for c in shown:
        attempts = ", ".join(f"{a:.2f}" for a in c.attempts)
        lines.append(f"{c.short:<{width}}  {c.ratio:6.2f}  {1 + c.limit:6.2f}  {attempts:<14} {c.verdict}")
    if len(compared) > len(shown):
        lines.append(f"... and {len(compared) - len(shown)} more within their limits")
    for c in result.cases:
        if c.verdict == "new":
            lines.append(f"{c.short}: not in the baseline (new benchmark): not gated")
    missing = [c for c in result.cases if c.verdict == "missing"]
    if missing:
        lines.append(f"{len(missing)} baseline benchmark(s) not in this run (deselected or skipped)")
    faster = [c for c in compared if c.verdict == "faster"]
    if faster:
        lines.append(f"{len(faster)} benchmark(s) faster than the baseline beyond their limit: "
                     + ", ".join(c.short for c in faster) + "; refresh the baseline to keep the gain")
    lines.append(f"suite factor (median ratio to the baseline, after calibration): {result.suite_factor:.3f} "
                 f"(limit {1 + result.suite_limit:.2f})")
    lines.extend(result.notes)
    if not result.comparable:
        lines.append("NOT GATED: across CPU models a GEMM and a memory-bound op do not scale together, so a baseline "
                     "from another machine model can tell no regression from the machine's difference. Gate with "
                     "`perfkit bench check` (the working tree against the reference commit, side by side), or record "
                     "a baseline on this machine model with `perfkit bench baseline`.")
    elif result.passed:
        lines.append(f"PASSED: {len(compared)} benchmark(s) within their limits")
    else:
        if result.suite_regressed:
            lines.append(f"FAILED: the whole suite is {result.suite_factor:.2f}x slower than the baseline relative to "
                         "the calibration GEMM")
        for c in result.regressed:
            lines.append(f"FAILED: {c.name} regressed: {c.ratio:.2f}x the baseline (limit {1 + c.limit:.2f}x)")
    return "\n".join(lines)


# -- the A/B gate: the working tree against a reference commit, in interleaved rounds on this machine -----------------
#: A case's limit: max(AB_FLOOR, AB_NOISE_MULTIPLE * its noise in the same run), capped at AB_CEILING. The noise is the
#: spread (max / min - 1) of the case's pair ratios, the most outlying pair left out: in an A/A run it is the A/A
#: noise itself, and a burst of load on a shared machine, which slows one round of one side (seen here: 40-60% over a
#: stretch of cases, for some seconds), moves neither it nor the median that is gated. Simulated with normal noise,
#: the median of four pair ratios has about 0.6 of one pair ratio's standard deviation and this spread about 1.3 of
#: it, so the limit sits at about two standard deviations of the statistic; the confirmation reruns, on which a real
#: regression stays over its limit and noise does not, keep one unlucky attempt from failing the check.
AB_FLOOR = 0.15
AB_NOISE_MULTIPLE = 1.0
AB_CEILING = 1.0
#: What must match for the two sides to time the same work; a case whose values differ is "changed", not gated.
SIGNATURE_KEYS = ("device", "backend", "variant", "layer", "pass", "dtype", "batch", "threads", "calls_per_round")


def per_call_times(doc: dict) -> dict[str, float]:
    """{fullname: seconds}: each case's fastest round in one pytest run, per call (`extra_info.calls_per_round`, 1
    when the suite does not say)."""
    out = {}
    for bench in doc.get("benchmarks", []):
        value = (bench.get("stats") or {}).get(STATISTIC)
        calls = (bench.get("extra_info") or {}).get("calls_per_round") or 1
        if isinstance(value, (int, float)) and value > 0:
            out[bench["fullname"]] = value / calls
    return out


def signatures(doc: dict) -> dict[str, dict]:
    """{fullname: the work it times}: the `SIGNATURE_KEYS` of its extra_info (calls_per_round 1 when absent)."""
    out = {}
    for bench in doc.get("benchmarks", []):
        info = bench.get("extra_info") or {}
        out[bench["fullname"]] = {key: info.get(key, 1 if key == "calls_per_round" else None)
                                  for key in SIGNATURE_KEYS}
    return out


@dataclass
class ABCase:
    """One case of the A/B gate. Times are seconds per call; ratios are A (working tree) over B (reference)."""

    name: str
    verdict: str  # "ok", "regressed", "faster", "new", "missing", "incomplete", "changed"
    a_s: float | None = None  # median over A's rounds (of the attempt that decided)
    b_s: float | None = None  # median over B's rounds
    ratio: float | None = None  # median over the pairs of A / B (of the attempt that decided)
    ratio_low: float | None = None  # range of A / B over that attempt's pairs
    ratio_high: float | None = None
    pairs: int = 0  # pairs of that attempt
    noise: float | None = None  # spread of the first attempt's pair ratios, the most outlying pair left out
    limit: float | None = None
    attempts: list[float] = field(default_factory=list)  # each attempt's median ratio (confirmation reruns append)
    reason: str = ""  # why a case is not gated
    a_rounds_s: list[float] = field(default_factory=list)  # each round's time, in pair order (all attempts)
    b_rounds_s: list[float] = field(default_factory=list)

    @property
    def short(self) -> str:
        return self.name.split("::")[-1]


@dataclass
class ABResult:
    cases: list[ABCase]
    pairs: int
    notes: list[str] = field(default_factory=list)
    first_a_round: dict | None = None  # side A's first round (its JSON), for the history line

    @property
    def gated(self) -> list[ABCase]:
        return [c for c in self.cases if c.ratio is not None]

    @property
    def regressed(self) -> list[ABCase]:
        return [c for c in self.cases if c.verdict == "regressed"]

    @property
    def passed(self) -> bool:
        return bool(self.gated) and not self.regressed

    @property
    def geomean_ratio(self) -> float | None:
        ratios = [c.ratio for c in self.gated]
        return math.exp(statistics.fmean(math.log(r) for r in ratios)) if ratios else None


def ab_limit(noise: float) -> float:
    return min(AB_CEILING, max(AB_FLOOR, AB_NOISE_MULTIPLE * noise))


def median_ratio(ratios: list[float]) -> float:
    """The median of ratios on a log scale (for an even count the geometric mean of the middle two, so that r and 1/r
    average to 1)."""
    return math.exp(statistics.median(math.log(r) for r in ratios))


def ratio_noise(ratios: list[float]) -> float:
    """max / min - 1 of the pair ratios, the one farthest from their median left out when there are three or more."""
    if len(ratios) < 2:
        raise ValueError("the noise of a ratio needs at least two pairs")
    kept = list(ratios)
    if len(kept) >= 3:
        middle = median_ratio(kept)
        kept.remove(max(kept, key=lambda r: abs(math.log(r / middle))))
    return max(kept) / min(kept) - 1


def _times(rounds: list[dict]) -> list[dict[str, float]]:
    return [per_call_times(doc) for doc in rounds]


def _paired(a: list[dict[str, float]], b: list[dict[str, float]], name: str):
    """The case's times in each pair where both sides timed it: ([a...], [b...])."""
    pairs = [(x[name], y[name]) for x, y in zip(a, b) if name in x and name in y]
    return [x for x, _ in pairs], [y for _, y in pairs]


def ab_compare(a_rounds: list[dict], b_rounds: list[dict]) -> ABResult:
    """Gate side A against side B from their rounds (pytest-benchmark JSON documents, `a_rounds[i]` paired with
    `b_rounds[i]`). Every case either side timed gets a verdict; see the module docstring."""
    if len(a_rounds) < 2 or len(a_rounds) != len(b_rounds):
        raise ValueError(f"the A/B gate needs as many rounds of each side, at least two ({len(a_rounds)} A, "
                         f"{len(b_rounds)} B)")
    a, b = _times(a_rounds), _times(b_rounds)
    a_sig, b_sig = signatures(a_rounds[0]), signatures(b_rounds[0])
    names = list(dict.fromkeys(n for times in a + b for n in times))
    cases = []
    for name in names:
        in_a, in_b = sum(name in t for t in a), sum(name in t for t in b)
        if not in_b or not in_a:
            side, verdict = ("the reference", "new") if not in_b else ("the working tree", "missing")
            cases.append(ABCase(name, verdict, reason=f"not timed by {side}: not gated"))
            continue
        if in_a < len(a) or in_b < len(b):
            cases.append(ABCase(name, "incomplete", reason=f"timed in {in_a} of A's and {in_b} of B's {len(a)} "
                                                            "rounds (a round failed?): not gated"))
            continue
        sig_a, sig_b = a_sig.get(name) or {}, b_sig.get(name) or {}
        if sig_a != sig_b:
            diff = ", ".join(f"{k} {sig_b.get(k)!r} -> {sig_a.get(k)!r}" for k in SIGNATURE_KEYS
                             if sig_a.get(k) != sig_b.get(k))
            cases.append(ABCase(name, "changed", reason=f"the two sides time different work ({diff}): not gated"))
            continue
        series_a, series_b = _paired(a, b, name)
        ratios = [x / y for x, y in zip(series_a, series_b)]
        noise = ratio_noise(ratios)
        limit = ab_limit(noise)
        ratio = median_ratio(ratios)
        cases.append(ABCase(name, _verdict(ratio, limit), statistics.median(series_a), statistics.median(series_b),
                            ratio, min(ratios), max(ratios), len(ratios), noise, limit, [ratio],
                            a_rounds_s=series_a, b_rounds_s=series_b))
    return ABResult(cases, len(a_rounds))


def _verdict(ratio: float, limit: float) -> str:
    return "regressed" if ratio > 1 + limit else "faster" if ratio < 1 / (1 + limit) else "ok"


def ab_confirm(result: ABResult, a_rounds: list[dict], b_rounds: list[dict]) -> ABResult:
    """Fold a rerun of the suspects (new interleaved pairs of both sides) into `result`: a case stays regressed only
    if this attempt is over its limit too. The limit stays the first attempt's; the figures shown are the attempt's
    that decided (the one within the limit, or the least damning one)."""
    a, b = _times(a_rounds), _times(b_rounds)
    for case in result.regressed:
        series_a, series_b = _paired(a, b, case.name)
        if not series_a:
            result.notes.append(f"{case.short}: not in the confirmation rerun of both sides; kept as regressed")
            continue
        ratios = [x / y for x, y in zip(series_a, series_b)]
        ratio = median_ratio(ratios)
        case.attempts.append(ratio)
        case.a_rounds_s += series_a
        case.b_rounds_s += series_b
        if ratio <= 1 + case.limit or ratio < case.ratio:
            case.ratio, case.ratio_low, case.ratio_high, case.pairs = ratio, min(ratios), max(ratios), len(ratios)
            case.a_s, case.b_s = statistics.median(series_a), statistics.median(series_b)
        if ratio <= 1 + case.limit:
            case.verdict = _verdict(ratio, case.limit)
            attempts = ", ".join(f"{x:.2f}x" for x in case.attempts)
            result.notes.append(f"{case.short}: over its {1 + case.limit:.2f}x limit, then within it on rerun "
                                f"{len(case.attempts) - 1} ({attempts}): noise, not a regression")
    return result


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.3f}"


def format_ab_report(result: ABResult, *, side_a: str = "A", side_b: str = "B", show: int | None = None) -> str:
    """The A/B gate's verdict: each gated case (the `show` worst, all by default) with its ratio, its range over the
    pairs, its noise and its limit; then what was not gated and why."""
    lines = [f"A = {side_a}", f"B = {side_b}",
             f"{result.pairs} interleaved pairs of rounds; ratio = median over the pairs of A / B per call (process "
             "CPU time on the CPU), range = its lowest and highest pair, noise = the spread of the pair ratios with "
             "the most outlying pair left out (the A/A noise, measured in this run)"]
    gated = sorted(result.gated, key=lambda c: -c.ratio)
    shown = [c for c in gated if c.verdict == "regressed"] + [c for c in gated if c.verdict != "regressed"]
    shown = shown[:max(show, len(result.regressed))] if show is not None else shown
    width = max([len(c.short) for c in shown] + [9])
    lines.append(f"{'benchmark':<{width}}  {'A ms':>9}  {'B ms':>9}  {'ratio':>5}  {'range':<11}  {'noise':>6}  "
                 f"{'limit':>5}  {'attempts':<16} verdict")
    for c in shown:
        attempts = ", ".join(f"{x:.2f}" for x in c.attempts)
        span = f"{c.ratio_low:.2f}-{c.ratio_high:.2f}"
        lines.append(f"{c.short:<{width}}  {_ms(c.a_s):>9}  {_ms(c.b_s):>9}  {c.ratio:5.2f}  {span:<11}  "
                     f"{c.noise:6.1%}  {1 + c.limit:5.2f}  {attempts:<16} {c.verdict}")
    if len(gated) > len(shown):
        lines.append(f"... and {len(gated) - len(shown)} more within their limits")
    for c in result.cases:
        if c.reason:
            lines.append(f"{c.short}: {c.verdict}: {c.reason}")
    faster = [c for c in gated if c.verdict == "faster"]
    if faster:
        lines.append(f"{len(faster)} benchmark(s) faster than the reference beyond their limit: "
                     + ", ".join(f"{c.short} ({c.ratio:.2f}x)" for c in faster))
    if gated:
        worst = gated[0]
        lines.append(f"over {len(gated)} gated benchmark(s): geometric mean ratio {result.geomean_ratio:.3f}; "
                     f"worst {worst.short} at {worst.ratio:.2f}x (limit {1 + worst.limit:.2f}x)")
    lines.extend(result.notes)
    if not gated:
        lines.append("FAILED: no benchmark was timed by both sides, so nothing was gated")
    elif result.passed:
        lines.append(f"PASSED: {len(gated)} benchmark(s) within their limits")
    for c in result.regressed:
        lines.append(f"FAILED: {c.name} regressed: {c.ratio:.2f}x the reference (range {c.ratio_low:.2f}-"
                     f"{c.ratio_high:.2f} over {c.pairs} pairs; limit {1 + c.limit:.2f}x), over its limit on every "
                     f"one of {len(c.attempts)} attempt(s) ({', '.join(f'{x:.2f}x' for x in c.attempts)})")
    return "\n".join(lines)


def ab_summary(result: ABResult) -> dict:
    """The A/B result as JSON-ready data (written beside the run's JSON by `perfkit bench check`)."""
    return {"schema": SCHEMA, "pairs": result.pairs, "passed": result.passed, "geomean_ratio": result.geomean_ratio,
            "floor": AB_FLOOR, "noise_multiple": AB_NOISE_MULTIPLE, "notes": result.notes,
            "cases": [{"name": c.name, "verdict": c.verdict, "a_s": c.a_s, "b_s": c.b_s, "ratio": c.ratio,
                       "ratio_low": c.ratio_low, "ratio_high": c.ratio_high, "pairs": c.pairs, "noise": c.noise,
                       "limit": c.limit, "attempts": c.attempts, "reason": c.reason or None,
                       "a_rounds_s": c.a_rounds_s, "b_rounds_s": c.b_rounds_s} for c in result.cases]}


def load(path) -> dict:
    return json.loads(Path(path).read_text())
