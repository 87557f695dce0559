"""`perfkit campaign`: everything a GPU machine can tell, in one command, one folder and a time budget.

    perfkit campaign [--device auto|cpu|cuda] [--out DIR] [--budget-minutes 25] [--quick] [--full]

Phases run in order, each with a share of the budget. Time a phase leaves unused passes on to the phases after it.

1. tests (15%): the tests that exercise a GPU, run on it with pytest in a subprocess: tests/kernels and
   tests/test_triton_backend.py (which run on CUDA when there is one) and every test marked `gpu`. The log goes to
   tests.log. Without a GPU this phase is skipped with the reason; the CPU suite is plain `pytest`.
2. studies (61%): every registered study except `baseline` (speedup2012 covers it), the most telling first. Each gets
   a slice of the phase in proportion to its weight. Studies run their `--quick` grids, or their full grids with
   `--full` (hours on one GPU, so the budget cuts them short). A study that reaches the end of its slice stops before
   its next case. Its run stays unfinished, and rerunning the campaign into the same folder resumes it.
3. profile (4%): the headline train step (network, bfloat16, batch 128, Triton and eager) under torch.profiler
   (perfkit.profile): launches per step, the GPU's idle share and the breakdown by kernel kind and layer, into the
   store (no trace file: the folder's files are fixed). Skipped without a GPU.
4. bench (12%): the regression suite's GPU half, recorded as a baseline (`perfkit bench baseline --device cuda`).
   bench.json is the last run; bench-baseline.json is the baseline, to be committed as
   tests/benchmarks/baselines/cuda-<gpu>.json. Skipped without a GPU.
5. export (the rest):
   - measurements.csv, every row of the store;
   - HEADLINES.md, the headline ratios computed from the store's measured rows, then every study's summary;
   - report.html, the dashboard. It needs plotly; without it, HEADLINES.md says how to build it elsewhere from
     perfkit.db;
   - campaign.json, what ran, for how long, and why anything was skipped.

Everything lands in one folder, default results/<device name>: perfkit.db, measurements.csv, HEADLINES.md,
campaign.json, tests.log, bench.json, bench-baseline.json and report.html, at most eight files.

`--quick` narrows every study to a few layers and the regression suite to a few benchmarks, with an 8-minute budget.
That is the form CI runs on a CPU-only machine.
"""
from __future__ import annotations

import json
import math
import platform
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import perfkit
from perfkit.cases import NETWORK
from perfkit.report import fmt_ms, fmt_num, format_table
from perfkit.store import load_device_peaks, load_measurements, load_summaries

BUDGET_MINUTES = 25.0
QUICK_BUDGET_MINUTES = 8.0
PHASE_SHARES = {"tests": 0.15, "studies": 0.61, "profile": 0.04, "bench": 0.12}  # export gets what is left
#: The profile phase's cases: the headline train step on the GPU, Triton beside eager, bfloat16, the paper's batch.
PROFILE_CASES = (("triton", "bfloat16"), ("torch", "bfloat16"))
PROFILE_BATCH = 128

#: Studies in the order the campaign runs them, with their share of the studies phase. Registered studies not named
#: here run last with weight 1; `baseline` is left out (speedup2012 measures the same CPU layers and more).
STUDY_WEIGHTS = (("speedup2012", 3.0), ("backends", 3.0), ("train_time", 1.0), ("roofline", 1.5), ("energy", 2.0),
                 ("precision", 2.0), ("batch", 2.0), ("activations", 2.0), ("ingredients", 1.0),
                 ("augmentation", 1.5), ("multigpu", 1.0))
LEFT_OUT = ("baseline",)
#: --quick: a few layers per study (the heaviest conv, the largest linear, the whole network).
QUICK_EXTRA = {"layers": ["conv2", "fc6", NETWORK]}
QUICK_BENCH = "conv2 or fc6 or network"
BENCH_RUNS, QUICK_BENCH_RUNS = 3, 1


@dataclass
class Phase:
    name: str
    status: str  # ran, partial, skipped, failed
    seconds: float = 0.0
    budget_s: float = 0.0
    note: str = ""
    detail: dict = field(default_factory=dict)


@dataclass
class Campaign:
    out: Path
    devices: tuple[str, ...]
    gpu_name: str | None
    budget_s: float
    quick: bool
    full: bool
    started_at: float = field(default_factory=time.monotonic)
    phases: list[Phase] = field(default_factory=list)

    @property
    def store(self) -> Path:
        return self.out / "perfkit.db"

    def elapsed(self) -> float:
        return time.monotonic() - self.started_at

    def left(self) -> float:
        return max(0.0, self.budget_s - self.elapsed())

    def slice_for(self, phase: str) -> float:
        """This phase's share of the budget left, in proportion to the phases still to come."""
        names = list(PHASE_SHARES)
        later = sum(PHASE_SHARES[n] for n in names[names.index(phase):])
        export = 1.0 - sum(PHASE_SHARES.values())
        return self.left() * PHASE_SHARES[phase] / (later + export)

    @property
    def ok(self) -> bool:
        return not any(p.status == "failed" for p in self.phases)


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "machine"


def default_out(gpu_name: str | None) -> Path:
    if gpu_name:
        return Path("results") / slug(gpu_name)
    from perfkit.env import collect_environment

    return Path("results") / slug(f"cpu {collect_environment().get('cpu_model') or platform.machine()}")


def checkout_tests() -> Path | None:
    tests = Path(perfkit.__file__).resolve().parent.parent / "tests"
    return tests if (tests / "conftest.py").is_file() else None


def run_campaign(device: str = "auto", out: str | Path | None = None, budget_minutes: float | None = None,
                 quick: bool = False, full: bool = False, show_progress: bool = True, log=sys.stderr) -> Campaign:
    from perfkit.study import resolve_devices

    devices = resolve_devices(device)
    gpu_name = None
    if any(d.startswith("cuda") for d in devices):
        import torch

        if torch.cuda.is_available():
            gpu_name = torch.cuda.get_device_name(0)
    budget = budget_minutes if budget_minutes is not None else (QUICK_BUDGET_MINUTES if quick else BUDGET_MINUTES)
    campaign = Campaign(Path(out) if out else default_out(gpu_name), devices, gpu_name, budget * 60.0, quick, full)
    campaign.out.mkdir(parents=True, exist_ok=True)
    print(f"perfkit campaign: {', '.join(devices)}{' (' + gpu_name + ')' if gpu_name else ''}, budget "
          f"{budget:g} min{', quick' if quick else ''}{', full grids' if full else ''} -> {campaign.out}",
          file=log, flush=True)
    for phase in (_tests_phase, _studies_phase, _profile_phase, _bench_phase):
        campaign.phases.append(phase(campaign, show_progress, log))
        p = campaign.phases[-1]
        print(f"perfkit campaign: {p.name} {p.status} in {p.seconds:.0f} s (slice {p.budget_s:.0f} s)"
              f"{': ' + p.note if p.note else ''}", file=log, flush=True)
    campaign.phases.append(_export_phase(campaign, log))
    _write_json(campaign)
    return campaign


# -- phases -------------------------------------------------------------------------------------------------------------
def _subprocess_phase(name: str, cmd: list[str], budget_s: float, log_path: Path, cwd: Path | None = None) -> Phase:
    started = time.monotonic()
    with log_path.open("a") as logf:
        logf.write(f"$ {' '.join(cmd)}\n")
        logf.flush()
        try:
            code = subprocess.run(cmd, stdout=logf, stderr=subprocess.STDOUT, timeout=max(budget_s, 1.0),
                                  cwd=cwd).returncode
        except subprocess.TimeoutExpired:
            return Phase(name, "partial", time.monotonic() - started, budget_s,
                         f"stopped at the end of its {budget_s:.0f} s slice")
    seconds = time.monotonic() - started
    return Phase(name, "ran" if code == 0 else "failed", seconds, budget_s,
                 "" if code == 0 else f"exit status {code}: see {log_path.name}")


def _tests_phase(campaign: Campaign, show_progress, log) -> Phase:
    budget = campaign.slice_for("tests")
    if not campaign.gpu_name:
        return Phase("tests", "skipped", 0.0, budget, "no GPU: the GPU tests need CUDA (the CPU suite is `pytest`)")
    tests = checkout_tests()
    if tests is None:
        return Phase("tests", "skipped", 0.0, budget, "the tests come with perfkit's source checkout, not the wheel")
    log_path = campaign.out / "tests.log"
    log_path.write_text("")
    base = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs"]
    started = time.monotonic()
    on_gpu = _subprocess_phase("tests", base + [str(tests / "kernels"), str(tests / "test_triton_backend.py")],
                               budget * 0.7, log_path, cwd=tests.parent)
    marked = _subprocess_phase("tests", base + ["-m", "gpu", str(tests), "--ignore", str(tests / "dashboards"),
                                                "--ignore", str(tests / "benchmarks")],
                               max(budget - (time.monotonic() - started), 1.0), log_path, cwd=tests.parent)
    results = _pytest_counts(log_path.read_text())
    status = "failed" if "failed" in (on_gpu.status, marked.status) else \
        "partial" if "partial" in (on_gpu.status, marked.status) else "ran"
    return Phase("tests", status, time.monotonic() - started, budget,
                 "; ".join(n for n in (on_gpu.note, marked.note) if n), {"pytest": results})


def _pytest_counts(text: str) -> list[str]:
    """pytest's closing count lines ('12 passed, 3 skipped in 4.5s')."""
    return re.findall(r"^=*\s*(\d+ (?:passed|failed|error).*?)\s*=*$", text, flags=re.MULTILINE)


def _studies_phase(campaign: Campaign, show_progress, log) -> Phase:
    from perfkit.studies import STUDIES
    from perfkit.study import StudyOptions, run_study

    budget = campaign.slice_for("studies")
    phase_end = time.monotonic() + budget
    weights = dict(STUDY_WEIGHTS)
    order = [name for name, _ in STUDY_WEIGHTS if name in STUDIES]
    order += [name for name in STUDIES if name not in weights and name not in LEFT_OUT]
    options = StudyOptions(devices=campaign.devices, quick=not campaign.full,
                           extra=dict(QUICK_EXTRA) if campaign.quick else {})
    detail, status, started = {}, "ran", time.monotonic()
    for i, name in enumerate(order):
        remaining_weight = sum(weights.get(n, 1.0) for n in order[i:])
        left = max(0.0, phase_end - time.monotonic())
        deadline = time.monotonic() + left * weights.get(name, 1.0) / remaining_weight
        study_started = time.monotonic()
        try:
            result = run_study(STUDIES[name], options, campaign.store, show_progress=show_progress, deadline=deadline)
            detail[name] = {"run_id": result.run_id, "rows_added": result.rows_added,
                            "cases_not_run": result.cases_not_run, "seconds": round(time.monotonic() - study_started)}
            if result.cases_not_run:
                status = "partial"
        except Exception as exc:  # one study's failure does not stop the others
            detail[name] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
            status = "failed"
            print(f"perfkit campaign: study {name} failed: {type(exc).__name__}: {exc}", file=log, flush=True)
    cut = [n for n, d in detail.items() if d.get("cases_not_run")]
    note = f"cut short by the budget: {', '.join(cut)} (rerun to resume)" if cut else ""
    return Phase("studies", status, time.monotonic() - started, budget, note, detail)


def _profile_phase(campaign: Campaign, show_progress, log) -> Phase:
    """The headline train step under torch.profiler (perfkit.profile): launches per step, GPU idle share and the
    breakdown by kernel kind and layer go into the store; no trace file is kept (the folder's file set is fixed)."""
    from perfkit.cases import Case
    from perfkit.env import collect_environment, environment_id, git_commit, machine_label
    from perfkit.profile import profile_cases, profile_runner_config
    from perfkit.runner import Runner
    from perfkit.store import Store

    budget = campaign.slice_for("profile")
    gpus = [d for d in campaign.devices if d.startswith("cuda")]
    if not campaign.gpu_name or not gpus:
        return Phase("profile", "skipped", 0.0, budget, "no GPU: the campaign profiles the GPU's headline train step")
    started = time.monotonic()
    cases = [Case(layer=NETWORK, backend=backend, device=gpus[0], dtype=dtype, batch=PROFILE_BATCH,
                  pass_name="train_step") for backend, dtype in PROFILE_CASES]
    env = collect_environment(probe_gpus=True)
    env_id = environment_id(env)
    try:
        with Store.open(campaign.store) as store:
            store.add_environment(env, env_id, machine_label(env))
            run_id, _ = store.start_or_resume_run("profile", {"study": "profile", "cases": [c.key for c in cases]},
                                                  env_id, git_commit(), perfkit.__version__, len(cases))
            runner = Runner(store, run_id, "profile", env, env_id, profile_runner_config(), show_progress=False)
            records = profile_cases(runner, cases, campaign.store, show_progress=show_progress, keep_traces=False,
                                    deadline=started + budget)
            if len(records) == len(cases):
                store.finish_run(run_id)
    except Exception as exc:  # the campaign goes on to the bench phase and the export
        return Phase("profile", "failed", time.monotonic() - started, budget, f"{type(exc).__name__}: {exc}"[:500])
    detail = {r["case_key"]: {"launches_per_step": r.get("launches_per_step"), "gpu_idle_share": r.get("gpu_idle_share"),
                              "profiled_over_timed": r.get("profiled_over_timed"), "note": r.get("note")}
              for r in records}
    status = "ran" if len(records) == len(cases) else "partial"
    return Phase("profile", status, time.monotonic() - started, budget,
                 "" if status == "ran" else "the budget ended before every case was profiled", detail)


def _bench_phase(campaign: Campaign, show_progress, log) -> Phase:
    budget = campaign.slice_for("bench")
    if not campaign.gpu_name:
        return Phase("bench", "skipped", 0.0, budget, "no GPU: the regression suite's GPU half needs CUDA")
    if checkout_tests() is None:
        return Phase("bench", "skipped", 0.0, budget, "the benchmark suite comes with perfkit's source checkout")
    cmd = [sys.executable, "-m", "perfkit", "bench", "baseline", "--device", "cuda", "--no-save",
           "--runs", str(QUICK_BENCH_RUNS if campaign.quick else BENCH_RUNS),
           "--json", str(campaign.out / "bench.json"), "--out", str(campaign.out / "bench-baseline.json")]
    if campaign.quick:
        cmd += ["--quick", "-k", QUICK_BENCH]
    return _subprocess_phase("bench", cmd, budget, campaign.out / "tests.log")


def _export_phase(campaign: Campaign, log) -> Phase:
    started = time.monotonic()
    if not campaign.store.exists():
        return Phase("export", "skipped", 0.0, campaign.left(), "no store: no study ran")
    df = load_measurements(campaign.store)
    df.to_csv(campaign.out / "measurements.csv", index=False)
    text = headlines(campaign)
    (campaign.out / "HEADLINES.md").write_text(text)
    note = ""
    try:
        from perfkit.dashboards import DashboardError, build_report

        try:
            build_report([campaign.store], campaign.out / "report.html")
        except DashboardError as exc:
            note = f"no dashboard here ({exc}); build it elsewhere: perfkit dashboard --store {campaign.store}"
    except ImportError as exc:
        note = f"no dashboard here ({exc}); build it elsewhere: perfkit dashboard --store {campaign.store}"
    if note:
        with (campaign.out / "HEADLINES.md").open("a") as f:
            f.write(f"\n{note}\n")
    return Phase("export", "ran", time.monotonic() - started, campaign.left(), note,
                 {"rows": len(df), "files": sorted(p.name for p in campaign.out.iterdir())})


def _write_json(campaign: Campaign) -> None:
    from perfkit.env import collect_environment

    doc = {"out": str(campaign.out), "devices": list(campaign.devices), "gpu": campaign.gpu_name,
           "budget_s": campaign.budget_s, "elapsed_s": round(campaign.elapsed(), 1), "quick": campaign.quick,
           "full": campaign.full, "perfkit": perfkit.__version__,
           "environment": collect_environment(probe_gpus=bool(campaign.gpu_name)),
           "phases": [asdict(p) for p in campaign.phases]}
    (campaign.out / "campaign.json").write_text(json.dumps(doc, indent=1, default=str) + "\n")


# -- headlines ----------------------------------------------------------------------------------------------------------
def headlines(campaign: Campaign) -> str:
    """The headline ratios, from the store's measured rows only, then every study's summary."""
    df = load_measurements(campaign.store)
    ok = df[(df.status == "ok") & df.time_median_s.notna()]
    parts = [f"# perfkit campaign: {campaign.gpu_name or 'no GPU'}",
             f"Devices {', '.join(campaign.devices)}; budget {campaign.budget_s / 60:g} min, "
             f"{'quick' if campaign.quick else 'full grids' if campaign.full else 'quick study grids'}; "
             f"{len(df)} rows ({len(ok)} speed results). Every figure below is computed from those rows; "
             "FLOPs count a multiply-add as 2.",
             _backend_ratios(ok, df), _gpu_vs_cpu(ok, df), _energy(ok, df), _roofline(ok, df),
             _days_to_train(ok, df)]
    summaries = load_summaries(campaign.store)
    if len(summaries):
        parts.append("## Study summaries")
        for row in summaries.itertuples():
            parts.append(f"### {row.study}\n\n```text\n{row.text}\n```")
    return "\n\n".join(parts) + "\n"


def _why_none(df, mask, what: str) -> str:
    """Why a headline has no rows: the notes of the rows that would have fed it, or that none were planned."""
    rows = df[mask] if len(df) else df
    if not len(rows):
        return f"No {what} rows were planned in this campaign."
    notes = rows.note.dropna().value_counts()
    top = "; ".join(f"{n}x {text}" for text, n in notes.head(3).items())
    return f"No {what} speed results: {top or 'see the rows statuses'}."


def _gpu(df):
    return df.device.astype(str).str.startswith("cuda")


def _geomean(values) -> float | None:
    values = [v for v in values if v and v > 0 and math.isfinite(v)]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def _backend_ratios(ok, df) -> str:
    head = "## Triton and torch.compile against torch eager"
    plain = ok[ok.options.isin(["{}", ""])].copy()
    plain["threads"] = plain.threads.fillna(0)
    rows = []
    for (device, pass_name, dtype, batch, threads), grp in plain.groupby(["device", "pass_name", "dtype", "batch",
                                                                         "threads"]):
        times = grp.groupby(["backend", "layer"]).time_median_s.min()  # one time per backend and layer
        if "torch" not in times.index.get_level_values(0):
            continue
        eager = times["torch"]
        row = {"device": device + (f" {int(threads)}t" if threads else ""), "pass": pass_name, "dtype": dtype,
               "batch": int(batch), "eager_ms": eager.get(NETWORK)}
        for backend in ("triton", "compile"):
            other = times[backend] if backend in times.index.get_level_values(0) else times.iloc[0:0]
            layers = [layer for layer in other.index if layer in eager.index and layer != NETWORK]
            row[f"{backend}_network"] = eager[NETWORK] / other[NETWORK] if NETWORK in other.index and \
                NETWORK in eager.index else None
            row[f"{backend}_layers"] = _geomean([eager[layer] / other[layer] for layer in layers])
        if any(row[k] for k in ("triton_network", "triton_layers", "compile_network", "compile_layers")):
            rows.append(row)
    if not rows:
        return f"{head}\n\n" + _why_none(df, df.backend.isin(["triton", "compile"]), "triton or compile")
    ratio = lambda v: "-" if v is None else f"{v:.2f}x"  # noqa: E731
    return (f"{head}\n\nSpeedup over eager (eager time / backend time; above 1 is faster), whole network and the "
            "geometric mean over the layers measured.\n\n```text\n" + format_table(rows, [
                ("device", "device", None), ("pass", "pass", None), ("dtype", "dtype", None), ("batch", "batch", None),
                ("eager_ms", "eager network ms", fmt_ms), ("triton_network", "triton network", ratio),
                ("triton_layers", "triton layers", ratio), ("compile_network", "compile network", ratio),
                ("compile_layers", "compile layers", ratio)]) + "\n```")


def _gpu_vs_cpu(ok, df) -> str:
    head = "## GPU against CPU (the 2012 comparison)"
    net = ok[(ok.layer == NETWORK) & ok.images_per_s.notna()]
    cpu = net[(net.device == "cpu") & (net.backend == "torch") & (net.dtype == "float32")]
    gpu = net[_gpu(net)]
    rows = []
    for pass_name, g in gpu.groupby("pass_name"):
        c = cpu[cpu.pass_name == pass_name]
        if c.empty:
            continue
        one = c[c.threads == c.threads.min()].images_per_s.max()
        allt = c[c.threads == c.threads.max()].images_per_s.max()
        for r in g.itertuples():
            rows.append({"pass": pass_name, "gpu": f"{r.backend} {r.dtype}{' autocast' if 'autocast' in r.options else ''}",
                         "gpu_img_s": r.images_per_s, "x_1thread": r.images_per_s / one,
                         "x_all": r.images_per_s / allt,
                         "threads": f"{int(c.threads.min())}/{int(c.threads.max())}"})
    if not rows:
        return f"{head}\n\n" + _why_none(df, (df.layer == NETWORK) & _gpu(df), "GPU whole-network")
    x = lambda v: f"{v:,.1f}x"  # noqa: E731
    from perfkit.reference import cite

    return (f"{head}\n\nWhole-network images/s on the GPU over the CPU's (torch float32), against one CPU thread and "
            f"all of them. Published: {cite('claim_gpu_vs_cpu_speedup')}; "
            f"{cite('convnet_benchmarks_cpu_vs_cudnn', '.1f')}.\n\n```text\n" + format_table(rows, [
                ("pass", "pass", None), ("gpu", "GPU configuration", None), ("gpu_img_s", "GPU img/s", fmt_num),
                ("x_1thread", "vs 1 CPU thread", x), ("x_all", "vs all CPU threads", x),
                ("threads", "CPU threads", None)]) + "\n```")


def _energy(ok, df) -> str:
    head = "## Energy"
    e = ok[ok.energy_per_image_j.notna()] if "energy_per_image_j" in ok else ok.iloc[0:0]
    if e.empty:
        notes = df.energy_note.dropna().value_counts() if "energy_note" in df else []
        reason = next(iter(notes.index), "no row measured energy") if len(notes) else "no row measured energy"
        return f"{head}\n\nNo energy measured: {reason}."
    rows = [{"device": r.device, "layer": r.layer, "pass": r.pass_name, "backend": r.backend, "dtype": r.dtype,
             "batch": int(r.batch), "j_img": r.energy_per_image_j, "img_j": r.images_per_j, "w": r.power_mean_w}
            for r in e.itertuples()]
    return (f"{head}\n\nJ/image and images/J over sustained windows of at least 5 s (NVML total-energy counter on a "
            "GPU, RAPL on a CPU).\n\n```text\n" + format_table(rows, [
                ("device", "device", None), ("layer", "layer", None), ("pass", "pass", None),
                ("backend", "backend", None), ("dtype", "dtype", None), ("batch", "batch", None),
                ("j_img", "J/image", lambda v: f"{v:.4g}"), ("img_j", "images/J", lambda v: f"{v:.4g}"),
                ("w", "mean W", lambda v: "-" if v is None or v != v else f"{v:.0f}")]) + "\n```")


def _roofline(ok, df) -> str:
    head = "## Fraction of the roofline per layer"
    r = ok[ok.roofline_fraction.notna() & (ok.layer != NETWORK) & (ok.pass_name == "forward")]
    preferred = r[r.study == "roofline"]
    r = preferred if len(preferred) else r
    if r.empty:
        return f"{head}\n\nNo row has a roofline fraction (device peaks missing: see device_peaks notes)."
    table = r.pivot_table(index="layer", columns=["device", "backend", "dtype"], values="roofline_fraction",
                          aggfunc="max", sort=False)
    rows = [{"layer": layer, **{" ".join(map(str, col)): v for col, v in vals.items()}}
            for layer, vals in table.iterrows()]
    cols = [("layer", "layer", None)] + [(" ".join(map(str, c)), " ".join(map(str, c)),
                                          lambda v: "-" if v is None or v != v else f"{v:.0%}") for c in table.columns]
    peaks = load_device_peaks(*(sorted(set(df.store)) if "store" in df else []))
    peaks = peaks.dropna(subset=["matmul_flops_per_s", "copy_bytes_per_s"])
    ceilings = "; ".join(
        f"{device} {dtype}{f' {threads} threads' if device == 'cpu' else ''}: {flops / 1e12:.3g} TFLOP/s, "
        f"{bw / 1e9:.4g} GB/s" for (device, dtype, threads), (flops, bw) in
        peaks.groupby(["device", "dtype", "threads"])[["matmul_flops_per_s", "copy_bytes_per_s"]].median().iterrows()
    ) or "none stored"
    return (f"{head}\n\nForward pass: achieved FLOP/s over min(measured matmul peak, intensity x measured copy "
            f"bandwidth). Ceilings (medians of the runs' measurements): {ceilings}.\n\n```text\n" + format_table(rows, cols) + "\n```")


def _days_to_train(ok, df) -> str:
    from perfkit.reference import cite, figure

    head = "## Days to train alexnet2012 (90 epochs of 1.2M images)"
    t = ok[(ok.layer == NETWORK) & (ok.pass_name == "train_step") & (ok.variant == "alexnet2012")]
    preferred = t[t.study == "train_time"]
    t = preferred if len(preferred) else t
    if t.empty:
        return f"{head}\n\n" + _why_none(df, (df.layer == NETWORK) & (df.pass_name == "train_step"), "train-step")
    images = figure("paper_epochs").value * figure("paper_train_images").value
    rows = [{"device": r.device, "config": f"{r.backend} {r.dtype}{' autocast' if 'autocast' in r.options else ''}",
             "batch": int(r.batch), "img_s": r.images_per_s, "days": images / r.images_per_s / 86400}
            for r in t.itertuples()]
    return (f"{head}\n\nAt the measured train-step throughput, one device. The paper: "
            f"{cite('paper_training_days')}, i.e. {cite('paper_images_per_s', '.0f')}.\n\n```text\n" +
            format_table(rows, [("device", "device", None), ("config", "configuration", None),
                                ("batch", "batch", None), ("img_s", "images/s", fmt_num),
                                ("days", "days", lambda v: f"{v:.3g}")]) + "\n```")
