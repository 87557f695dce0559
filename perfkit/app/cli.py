"""The `perfkit` command.

    perfkit run [--device auto|cpu|cuda] [--quick] [--store PATH]      the default studies for this hardware
                                                                       (CPU: baseline; GPU: every study), and their
                                                                       dashboard
    perfkit study --list | NAME [--device ...] [--quick] [--store PATH] one study
    perfkit layers [--variant V] [--batch N] [--dtype D] [--format table|json|csv]
    perfkit env [--format table|json] [--gpus]
    perfkit results [--store PATH] [--format table|json|csv]
    perfkit merge OUT IN...
    perfkit campaign [--device ...] [--out DIR] [--budget-minutes M] [--quick]   everything, in one folder
    perfkit dashboard [--store PATH ...] [-o report.html] [--png DIR] [--benchmarks DIR]
    perfkit profile [--study NAME | --layer L --backend B --device D --dtype T --batch N --pass P] [--ncu]
                                                                       where each case's time goes: layers, ops,
                                                                       kernels, launches; traces for Perfetto
    perfkit selfcheck timer [--device cpu|cuda] [--batch N] [--threads N]   perfkit's timer against torch.utils.benchmark
                                                                       (CPU) or triton's do_bench (GPU), side by side
    perfkit kernels check [--arch sm_90,sm_80] [--configs default|all] [--format table|json] [--write-tables]
                                                                       every Triton binary a GPU run needs, compiled
                                                                       ahead of time and checked, with no GPU

Exit status: 0 success, 1 a failure while working (a refused store, a failed run), 2 bad arguments.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from perfkit.results.store import STORE_ENV_VAR, StoreError, default_store_path
from perfkit.specs import GPU_PRECISIONS

FORMATS = ("table", "json", "csv")


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument on one line, with a hint, and exits 2.

    A command's parser with `study_command` set gets the options the registered studies declare for that command
    (perfkit.study.StudyOption) when it first parses or prints its help, so that perfkit.studies (and torch) is
    imported only by the commands that run studies."""

    study_command: str | None = None
    _study_options_added: bool = False

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")

    def _ensure_study_options(self) -> None:
        if self.study_command and not self._study_options_added:
            self._study_options_added = True
            add_study_options(self, self.study_command)

    def parse_known_args(self, args=None, namespace=None):
        self._ensure_study_options()
        return super().parse_known_args(args, namespace)

    def format_help(self):
        self._ensure_study_options()
        return super().format_help()


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{value:g} is not a positive number")
    return value


def _names(text: str, allowed, what: str) -> list[str]:
    """A comma-separated list of names from ``allowed``, in order, without repeats."""
    names = [a.strip() for a in text.split(",") if a.strip()]
    bad = [a for a in names if a not in allowed]
    if not names or bad:
        raise argparse.ArgumentTypeError(f"unknown {what} {', '.join(bad) or text!r} (choose from "
                                         f"{', '.join(allowed)}, comma-separated)")
    return list(dict.fromkeys(names))


def _layer_names() -> list[str]:
    from perfkit.specs import VARIANTS, build_network

    names = {"network"}
    for variant in VARIANTS:
        names |= set(build_network(variant).layer_names)
    return sorted(names)


def _backend_names() -> list[str]:
    from perfkit.backends import BACKENDS

    return list(BACKENDS)


def arch_list(text: str) -> list[str]:
    from perfkit.app.kernelcheck import ARCH_NAMES

    return _names(text, ARCH_NAMES, "arch")


def precision_list(text: str) -> list[str]:
    from perfkit.app.kernelcheck import PRECISIONS

    return _names(text, PRECISIONS, "precision")


def device_arg(text: str) -> str:
    if text in ("auto", "cpu", "cuda") or (text.startswith("cuda:") and text[5:].isdigit()):
        return text
    raise argparse.ArgumentTypeError(f"invalid device {text!r} (choose from auto, cpu, cuda, cuda:N)")


def study_options(command: str) -> list:
    """(study, option) for every option a registered study declares for `command` ("study", "run"), in registry
    order."""
    from perfkit.studies import STUDIES

    return [(study, option) for study in STUDIES.values() for option in study.cli_options
            if command in option.commands]


def add_study_options(p: argparse.ArgumentParser, command: str) -> None:
    """The registered studies' own options for `command`, each help text saying which study it belongs to."""
    for study, option in study_options(command):
        kwargs = option.argparse_kwargs()
        kwargs["help"] = f"{study.name} only: {kwargs['help']}"
        p.add_argument(option.flag, **kwargs)


def _add_study_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", type=device_arg, default="auto",
                   help="auto (the CPU, and the GPU when there is one), cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--quick", action="store_true", help="small batches and short timing: minutes on a laptop CPU")
    p.add_argument("--store", default=None,
                   help=f"SQLite store to append to (default: ${STORE_ENV_VAR} or perfkit.db)")
    p.add_argument("--batch", type=positive_int, default=None, help="override the study's batch size")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads for torch (default: all)")
    p.add_argument("--variant", default=None, help="network variant: alexnet2012, owt, kernelbench")
    p.add_argument("--new-run", action="store_true",
                   help="start a new run even if an unfinished one with the same arguments could be resumed")
    p.add_argument("--no-progress", action="store_true", help="no progress display")
    _add_autotune_arg(p)


def _add_autotune_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--autotune", choices=("default", "full"), default=None,
                   help="Triton configs on a GPU: default (one per problem, from the committed per-arch table) or "
                        "full (sweep every config, then write the winners beside the store in the table's format); "
                        "default: $PERFKIT_AUTOTUNE or default")


def _apply_autotune(args) -> None:
    import os

    if getattr(args, "autotune", None):
        os.environ["PERFKIT_AUTOTUNE"] = args.autotune


def _write_sweep_winners(out_dir: Path) -> None:
    """After a PERFKIT_AUTOTUNE=full run: the swept winners per arch, in the committed tables' format."""
    from perfkit.app.kernelcheck import write_sweep_winners

    for path in write_sweep_winners(out_dir):
        print(f"autotune winners written to {path} (commit as perfkit/kernels/tables/<arch>.json 'defaults')",
              file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="perfkit", description="GPU performance profiling and hardware studies around AlexNet.")
    from perfkit import __version__

    parser.add_argument("--version", action="version", version=f"perfkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("run", help="run the default studies on the hardware found, print a summary, write the dashboard")
    p.study_command = "run"  # and the studies' own options for `run` (_Parser)
    _add_study_args(p)
    p.add_argument("--report", default=None, help="dashboard HTML to write (default: beside the store, "
                                                  "perfkit.db -> perfkit-report.html)")
    p.add_argument("--no-report", action="store_true", help="do not write the dashboard")

    p = sub.add_parser("study", help="run one study, or list them")
    p.add_argument("name", nargs="?", help="the study to run")
    p.add_argument("--list", action="store_true", help="list the studies")
    p.study_command = "study"  # and every study's own options, e.g. --cifar10 (_Parser)
    _add_study_args(p)

    p = sub.add_parser("layers", help="the network specs and cost model, per layer and total")
    p.add_argument("--variant", default="alexnet2012", help="alexnet2012 (default), owt, kernelbench")
    p.add_argument("--batch", type=positive_int, default=1, help="images per batch (default 1)")
    p.add_argument("--dtype", default="float32", help="float32 (default), tf32, float16, bfloat16")
    p.add_argument("--activation", default="relu", help="relu (default), tanh, sigmoid")
    p.add_argument("--format", choices=FORMATS, default="table")

    p = sub.add_parser("env", help="this machine and its software, as stored with every run")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--gpus", action="store_true", help="also probe GPUs (initialises CUDA and NVML)")

    p = sub.add_parser("results", help="the measurements in a store")
    p.add_argument("--store", default=None, help=f"store to read (default: ${STORE_ENV_VAR} or perfkit.db)")
    p.add_argument("--format", choices=FORMATS, default="table")
    p.add_argument("--study", default=None, help="only this study's rows")

    p = sub.add_parser("merge", help="combine stores from several machines into OUT")
    p.add_argument("out", help="store to merge into (created if missing)")
    p.add_argument("inputs", nargs="+", metavar="IN", help="stores to merge from")

    p = sub.add_parser("dashboard", help="one self-contained HTML report (Plotly) from one or more stores")
    p.add_argument("--store", action="extend", nargs="+", default=None, metavar="PATH",
                   help=f"store(s) to report on, repeatable (default: ${STORE_ENV_VAR} or perfkit.db)")
    p.add_argument("-o", "--output", default="report.html", help="HTML file to write (default: report.html)")
    p.add_argument("--png", default=None, metavar="DIR",
                   help="also write each figure as a PNG into DIR (kaleido with the system's Chrome/Chromium)")
    p.add_argument("--benchmarks", default=None, metavar="DIR",
                   help="pytest-benchmark JSON folder for the regression history (default: .benchmarks if present)")

    p = sub.add_parser("campaign", help="everything in one folder within a time budget: GPU tests, every study, "
                                        "the suite's GPU half, CSV, headlines, dashboard")
    p.add_argument("--device", type=device_arg, default="auto", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default: results/<device name>)")
    p.add_argument("--budget-minutes", type=positive_float, default=None, metavar="M",
                   help="time budget (default 25; 8 with --quick)")
    p.add_argument("--quick", action="store_true", help="a few layers per study and a few benchmarks (CI, a CPU)")
    p.add_argument("--full", action="store_true", help="the studies' full grids (hours on one GPU: the budget cuts "
                                                       "them; rerun to resume)")
    p.add_argument("--no-progress", action="store_true", help="no progress display")
    p.add_argument("--plan", action="store_true", help="print the phases, their cases, the Triton binaries to "
                                                       "compile and each phase's estimated time; run nothing")
    p.add_argument("--gpu", choices=("h100", "h200", "a100"), default=None,
                   help="with --plan: the GPU to plan for (default: the one here, else h100)")
    p.add_argument("--store", default=None, metavar="PATH",
                   help="with --plan: a store whose measured case times replace the model's (default: "
                        "<out>/perfkit.db when it exists)")
    _add_autotune_arg(p)

    p = sub.add_parser("profile", help="where a case's time goes: torch.profiler breakdowns by layer, op and kernel, "
                                       "launches per step, traces for Perfetto, beside the timed median")
    p.add_argument("--study", default=None, help="profile this study's cases (with --quick: its quick grid)")
    p.add_argument("--quick", action="store_true", help="with --study: the study's quick grid")
    p.add_argument("--variant", default="alexnet2012", help="network variant (default alexnet2012)")
    p.add_argument("--layer", type=lambda t: _names(t, _layer_names(), "layer"), default=["network"],
                   metavar="LAYERS", help="comma-separated layers, or network (default)")
    p.add_argument("--backend", type=lambda t: _names(t, _backend_names(), "backend"), default=["torch"],
                   metavar="BACKENDS", help="comma-separated: torch (default), compile, channels_last, triton, "
                                            "onnxruntime")
    p.add_argument("--device", type=device_arg, default="auto",
                   help="auto (default: the GPU when there is one, else the CPU), cpu, cuda or cuda:N")
    p.add_argument("--dtype", type=lambda t: _names(t, GPU_PRECISIONS, "dtype"),
                   default=["float32"], metavar="DTYPES", help="comma-separated (default float32)")
    p.add_argument("--batch", type=positive_int, default=None, help="images per step (default 8)")
    p.add_argument("--pass", dest="passes", type=lambda t: _names(t, ("forward", "backward", "train_step"), "pass"),
                   default=["forward", "train_step"], metavar="PASSES",
                   help="comma-separated: forward, backward, train_step (default forward,train_step)")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads for torch (default: all)")
    p.add_argument("--steps", type=positive_int, default=3, help="profiled steps per case (default 3)")
    p.add_argument("--top", type=positive_int, default=5, help="ops per case to print (default 5)")
    p.add_argument("--ncu", action="store_true",
                   help="also run each GPU case under Nsight Compute (ncu on PATH) and store its per-kernel figures")
    p.add_argument("--ncu-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--store", default=None,
                   help=f"SQLite store to append to (default: ${STORE_ENV_VAR} or perfkit.db); traces go beside it")
    p.add_argument("--new-run", action="store_true", help="start a new run even if an unfinished one could resume")
    p.add_argument("--no-progress", action="store_true", help="no progress display")

    p = sub.add_parser("selfcheck", help="check perfkit's own instruments against references users trust")
    ssub = p.add_subparsers(dest="selfcheck_command", metavar="CHECK", parser_class=_Parser)
    ssub.required = True
    s = ssub.add_parser("timer", help="perfkit's timer against torch.utils.benchmark (CPU) or triton.testing.do_bench "
                                      "(GPU) on a conv, a linear, an LRN, the network forward and a train step, side "
                                      "by side; exit 1 when a ratio is outside 1 +- the tolerance")
    s.add_argument("--device", type=device_arg, default="cpu",
                   help="cpu (default), cuda or cuda:N; auto: the GPU when there is one, else the CPU")
    s.add_argument("--batch", type=positive_int, default=8, help="images per call (default 8)")
    s.add_argument("--threads", type=positive_int, default=None, help="CPU threads for both timers (default: all)")
    s.add_argument("--rounds", type=positive_int, default=3, help="alternating rounds per case (default 3)")
    s.add_argument("--min-time", type=positive_float, default=1.0, metavar="S",
                   help="seconds each timer measures per round (default 1)")
    s.add_argument("--tolerance", type=positive_float, default=0.05, help="allowed |ratio - 1| (default 0.05)")
    s.add_argument("--format", choices=("table", "json"), default="table")
    s.add_argument("--no-progress", action="store_true", help="no progress display")

    p = sub.add_parser("kernels", help="the Triton kernels: compile them ahead of time for a GPU and check the binaries")
    ksub = p.add_subparsers(dest="kernels_command", metavar="ACTION", parser_class=_Parser)
    ksub.required = True
    k = ksub.add_parser("check", help="compile every binary a GPU run needs, for each arch, with no GPU present; exit 1 "
                                      "on a compile error, an unlaunchable binary, a GEMM without tensor cores or a "
                                      "default that spills")
    k.add_argument("--arch", type=arch_list, default=["sm_90"], metavar="ARCHES",
                   help="comma-separated: sm_90 (H100, H200), sm_80 (A100) (default: sm_90)")
    k.add_argument("--configs", choices=("default", "all", "search"), default="default",
                   help="default: the one config per problem a default GPU run uses; all: every config of the lists "
                        "(what PERFKIT_AUTOTUNE=full sweeps); search: per problem, configs in order of preference "
                        "until a clean one (enough for --write-tables)")
    k.add_argument("--format", choices=("table", "json"), default="table")
    k.add_argument("--batch", type=positive_int, default=128, help="the AlexNet cases' batch (default 128)")
    k.add_argument("--precision", type=precision_list, default=None, metavar="LIST",
                   help="comma-separated subset of float32 (IEEE), tf32, float16, bfloat16 (default: all four)")
    k.add_argument("--jobs", type=positive_int, default=None, help="compile processes (default: one per core)")
    k.add_argument("--json", default=None, metavar="PATH", help="also write the full report (every binary) as JSON")
    k.add_argument("--write-tables", action="store_true",
                   help="with --configs all or search: write kernels/tables/<arch>.json (unlaunchable configs, "
                        "defaults) from the compiler's figures")
    k.add_argument("--avoid-from", action="append", default=[], metavar="REPORT",
                   help="with --write-tables: a --json report of a check under another triton version; configs that "
                        "spilled or failed there are not chosen as defaults (repeatable)")
    k.add_argument("--no-progress", action="store_true", help="no progress display")

    p = sub.add_parser("bench", help="the pytest-benchmark regression suite: run it, gate it, refresh its baseline")
    from perfkit.app.bench import add_arguments as _add_bench_arguments

    _add_bench_arguments(p, parser_class=_Parser)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args, parser)
    except StoreError as exc:
        print(f"perfkit {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\nperfkit {args.command}: interrupted; finished cases are stored and a rerun resumes.",
              file=sys.stderr)
        return 130


# -- commands -----------------------------------------------------------------------------------------------------------
def _usage_error(parser, command: str, message: str) -> int:
    print(f"perfkit {command}: error: {message} (see 'perfkit {command} --help')", file=sys.stderr)
    return 2


def _device_error(args, command: str) -> int:
    """1, with the reason on stderr, when `--device` names a GPU this machine cannot use; 0 otherwise. Checked before
    anything runs or is stored."""
    from perfkit.study import absent_device_reason

    reason = absent_device_reason(args.device)
    if reason is None:
        return 0
    print(f"perfkit {command}: error: --device {args.device}: {reason}. Nothing was run; '--device auto' measures "
          "the CPU and records GPU cases as skipped.", file=sys.stderr)
    return 1


def _study_options(args, parser, command, names):
    from perfkit.specs import DEFAULT_VARIANT, VARIANTS
    from perfkit.study import StudyOptionError, StudyOptions, resolve_devices

    variant = args.variant or DEFAULT_VARIANT
    if variant not in VARIANTS:
        return None, _usage_error(parser, command, f"unknown variant {variant!r} (choose from "
                                                   f"{', '.join(VARIANTS)})")
    extra = {}
    for study, option in study_options(command):
        value = getattr(args, option.dest, None)
        if not option.given(value):
            continue
        if study.name not in names:
            return None, _usage_error(parser, command, f"{option.flag} is an option of the {study.name} study")
        try:
            extra[option.extra_key] = option.extra_value(value)
        except StudyOptionError as exc:
            return None, _usage_error(parser, command, str(exc))
    return StudyOptions(devices=resolve_devices(args.device), quick=args.quick, batch=args.batch, variant=variant,
                        threads=args.threads, extra=extra), 0


def _run_studies(names, args, parser, command) -> int:
    from perfkit.studies import get_study
    from perfkit.study import run_study

    options, code = _study_options(args, parser, command, names)
    if options is None:
        return code
    code = _device_error(args, command)
    if code:
        return code
    store = args.store or default_store_path()
    _apply_autotune(args)
    failed = 0
    for name in names:
        study = get_study(name)
        print(f"perfkit {command}: study {name} on {', '.join(options.devices)}"
              f"{' (quick)' if options.quick else ''} -> {store}", file=sys.stderr)
        result = run_study(study, options, store, show_progress=not args.no_progress, resume=not args.new_run)
        if result.resumed:
            print(f"resumed unfinished run {result.run_id}", file=sys.stderr)
        print(result.summary.text)
        print()
        from perfkit.results.store import load_measurements

        df = load_measurements(result.store_path)
        failed += int((df[df.run_id == result.run_id].status.isin(["error"])).sum())
    print(f"stored in {store}; `perfkit results --store {store}` lists the rows.", file=sys.stderr)
    _write_sweep_winners(Path(store).resolve().parent)
    if failed:
        print(f"perfkit {command}: {failed} case(s) failed with an error; see the 'note' column.", file=sys.stderr)
        return 1
    return 0


def default_report_path(store: str) -> str:
    """The main job's report beside its store: perfkit.db -> perfkit-report.html."""
    path = Path(store)
    return str(path.with_name(f"{path.stem}-report.html"))


def cmd_run(args, parser) -> int:
    from perfkit.study import resolve_devices
    from perfkit.studies import default_studies

    code = _device_error(args, "run")
    if code:
        return code  # before the dashboard too: nothing was measured
    code = _run_studies(default_studies(resolve_devices(args.device)), args, parser, "run")
    if args.no_report or code == 2:
        return code
    store = args.store or default_store_path()
    output = args.report or default_report_path(store)
    try:
        from perfkit.dashboards import DashboardError, build_report
    except ImportError as exc:  # a broken install: the measurements are stored all the same
        print(f"perfkit run: no dashboard ({exc})", file=sys.stderr)
        return code
    try:
        history = Path(".benchmarks")  # the regression suite's saved runs, when this is a perfkit checkout
        written = build_report([store], output, benchmarks_dir=history if history.is_dir() else None)
        print(f"dashboard: {written} (self-contained HTML; open it in a browser, no network needed)", file=sys.stderr)
    except DashboardError as exc:  # e.g. plotly missing: the run itself succeeded
        print(f"perfkit run: no dashboard: {exc}", file=sys.stderr)
    return code


def cmd_study(args, parser) -> int:
    from perfkit.studies import STUDIES

    if args.list:
        width = max(len(n) for n in STUDIES)
        for name, study in STUDIES.items():
            print(f"{name:<{width}}  {study.description}")
        return 0
    if not args.name:
        return _usage_error(parser, "study", "name a study, or use --list")
    if args.name not in STUDIES:
        return _usage_error(parser, "study", f"unknown study {args.name!r} (choose from {', '.join(STUDIES)})")
    return _run_studies([args.name], args, parser, "study")


def _emit(rows: list[dict], fmt: str, table_columns) -> None:
    if fmt == "json":
        print(json.dumps(rows, indent=2, default=str))
    elif fmt == "csv":
        import csv

        if not rows:
            return
        writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in row.items()})
    else:
        from perfkit.app.tables import format_table

        print(format_table(rows, table_columns))


def cmd_layers(args, parser) -> int:
    from perfkit.app.tables import fmt_si
    from perfkit.specs import ACTIVATIONS, DTYPE_BYTES, VARIANTS, build_network, layer_table

    if args.variant not in VARIANTS:
        return _usage_error(parser, "layers", f"unknown variant {args.variant!r} (choose from {', '.join(VARIANTS)})")
    if args.dtype not in DTYPE_BYTES:
        return _usage_error(parser, "layers", f"unknown dtype {args.dtype!r} (choose from {', '.join(DTYPE_BYTES)})")
    if args.activation not in ACTIVATIONS:
        return _usage_error(parser, "layers", f"unknown activation {args.activation!r} (choose from "
                                              f"{', '.join(ACTIVATIONS)})")
    network = build_network(args.variant, args.activation)
    rows = layer_table(network, args.batch, args.dtype)
    if args.format == "json":
        print(json.dumps({"variant": args.variant, "activation": args.activation, "batch": args.batch,
                          "dtype": args.dtype, "flops_convention": "a multiply-add is 2 FLOPs",
                          "layers": rows[:-1], "total": rows[-1]}, indent=2))
        return 0
    for row in rows:
        row["out"] = "x".join(map(str, row["out_shape"])) or "scalar"
    _emit(rows, args.format, [
        ("layer", "layer", None), ("description", "description", None), ("out", "output", None),
        ("params", "params", lambda v: f"{v:,}"),
        ("forward_flops", "fwd FLOPs", fmt_si), ("backward_flops", "bwd FLOPs", fmt_si),
        ("train_step_flops", "train FLOPs", fmt_si),
        ("forward_bytes_min", "fwd bytes", lambda v: fmt_si(v, "B")),
        ("train_step_bytes_min", "train bytes", lambda v: fmt_si(v, "B"))])
    if args.format == "table":
        print(f"\n{args.variant}, batch {args.batch}, {args.dtype}; a multiply-add is 2 FLOPs; bytes are the minimum "
              "each layer must move.")
    return 0


def cmd_env(args, parser) -> int:
    from perfkit.measure.env import collect_environment, environment_id

    env = collect_environment(probe_gpus=args.gpus)
    env["env_id"] = environment_id(env)
    if args.format == "json":
        print(json.dumps(env, indent=2, default=str))
    else:
        width = max(len(k) for k in env)
        for key, value in env.items():
            print(f"{key:<{width}}  {json.dumps(value) if isinstance(value, (list, dict)) else value}")
    return 0


RESULT_COLUMNS = ("study", "variant", "layer", "backend", "device", "dtype", "batch", "pass_name", "threads", "status",
                  "time_median_s", "time_p10_s", "time_p90_s", "repetitions", "images_per_s", "achieved_flops_per_s",
                  "error_rel", "cpu_peak_rss_bytes", "note")


def cmd_results(args, parser) -> int:
    from perfkit.app.tables import fmt_ms, fmt_num, fmt_si
    from perfkit.results.store import load_measurements

    store = args.store or default_store_path()
    df = load_measurements(store)
    if args.study:
        df = df[df.study == args.study]
    if df.empty:
        print(f"no measurements in {store}" + (f" for study {args.study}" if args.study else ""), file=sys.stderr)
        return 0
    if args.format == "table":
        rows = df[list(RESULT_COLUMNS)].astype(object).where(df[list(RESULT_COLUMNS)].notna(), None).to_dict("records")
        _emit(rows, "table", [
            ("study", "study", None), ("layer", "layer", None), ("backend", "backend", None),
            ("device", "device", None), ("dtype", "dtype", None), ("batch", "batch", None),
            ("pass_name", "pass", None), ("threads", "thr", None), ("status", "status", None),
            ("time_median_s", "median ms", fmt_ms), ("time_p10_s", "p10 ms", fmt_ms), ("time_p90_s", "p90 ms", fmt_ms),
            ("repetitions", "reps", None), ("images_per_s", "img/s", fmt_num),
            ("achieved_flops_per_s", "FLOP/s", fmt_si),
            ("error_rel", "rel. error", lambda v: "-" if v is None else f"{v:.1e}"),
            ("cpu_peak_rss_bytes", "peak RSS", lambda v: fmt_si(v, "B"))])
        print(f"\n{len(df)} rows from {store}", file=sys.stderr)
        return 0
    out = df.astype(object).where(df.notna(), None)
    if args.format == "json":
        print(json.dumps(out.to_dict("records"), indent=1, default=str))
    else:
        df.to_csv(sys.stdout, index=False)
    return 0


def cmd_merge(args, parser) -> int:
    from perfkit.results.store import merge

    added = merge(args.out, args.inputs)
    print(f"merged {len(args.inputs)} store(s) into {args.out}: "
          + ", ".join(f"{n} {table}" for table, n in added.items()) + " added")
    return 0


def cmd_dashboard(args, parser) -> int:
    import os

    from perfkit.dashboards import DashboardError, build, export_png

    stores = args.store or [default_store_path()]
    benchmarks = args.benchmarks
    if benchmarks is None and os.path.isdir(".benchmarks"):
        benchmarks = ".benchmarks"
    elif benchmarks is not None and not os.path.isdir(benchmarks):
        return _usage_error(parser, "dashboard", f"--benchmarks {benchmarks}: no such directory")
    try:
        report = build(stores, benchmarks)
        path = report.write_html(args.output)
        print(f"wrote {path} ({len(report.figures)} figures in {len(report.sections)} sections from "
              f"{len(stores)} store(s){', with benchmark history from ' + benchmarks if benchmarks else ''})")
        if args.png:
            pngs = export_png(report, args.png)
            print(f"wrote {len(pngs)} PNG(s) to {args.png}")
    except DashboardError as exc:
        print(f"perfkit dashboard: {exc}", file=sys.stderr)
        return 1
    return 0


def _campaign_plan(args) -> int:
    from perfkit.app.campaignplan import format_plan, gpu_key_for, make_plan

    gpu = args.gpu
    if gpu is None:
        import torch

        gpu = (gpu_key_for(torch.cuda.get_device_name(0)) if torch.cuda.is_available() else None) or "h100"
    store = Path(args.store) if args.store else None
    if store is None:
        here = Path(args.out) if args.out else None
        store = here / "perfkit.db" if here and (here / "perfkit.db").exists() else None
    plan = make_plan(gpu, args.budget_minutes, quick=args.quick, full=args.full, store=store)
    print(format_plan(plan))
    return 0


def cmd_campaign(args, parser) -> int:
    from perfkit.app.campaign import run_campaign

    if args.quick and args.full:
        return _usage_error(parser, "campaign", "--quick and --full contradict each other")
    if not args.plan and (args.gpu or args.store):
        return _usage_error(parser, "campaign", "--gpu and --store only go with --plan")
    if args.plan:
        return _campaign_plan(args)
    code = _device_error(args, "campaign")
    if code:
        return code
    _apply_autotune(args)
    campaign = run_campaign(args.device, args.out, args.budget_minutes, quick=args.quick, full=args.full,
                            show_progress=not args.no_progress)
    _write_sweep_winners(Path(campaign.out))
    print((campaign.out / "HEADLINES.md").read_text() if (campaign.out / "HEADLINES.md").exists() else "")
    print(f"perfkit campaign: {campaign.elapsed() / 60:.1f} min; results in {campaign.out}", file=sys.stderr)
    return 0 if campaign.ok else 1


def cmd_profile(args, parser) -> int:
    from perfkit.app.profile import run_profile_cli
    from perfkit.specs import VARIANTS

    if args.study:
        from perfkit.studies import STUDIES

        if args.study not in STUDIES:
            return _usage_error(parser, "profile", f"unknown study {args.study!r} (choose from {', '.join(STUDIES)})")
    elif args.quick:
        return _usage_error(parser, "profile", "--quick goes with --study (it picks the study's quick grid)")
    if args.variant not in VARIANTS:
        return _usage_error(parser, "profile", f"unknown variant {args.variant!r} (choose from {', '.join(VARIANTS)})")
    code = _device_error(args, "profile")
    if code:
        return code
    args.store = args.store or default_store_path()
    return run_profile_cli(args)


def cmd_selfcheck(args, parser) -> int:
    from perfkit.app.selfcheck import run_timer_selfcheck_cli

    if args.device == "auto":
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    code = _device_error(args, "selfcheck")
    if code:
        return code
    return run_timer_selfcheck_cli(args)


def cmd_bench(args, parser) -> int:
    from perfkit.app.bench import main as bench_main

    return bench_main(args)


def cmd_kernels(args, parser) -> int:
    import os
    import subprocess

    if args.write_tables and args.configs == "default":
        return _usage_error(parser, "kernels check", "--write-tables needs --configs all or search (a default is "
                                                     "chosen among the configs of a list)")

    if os.environ.get("TRITON_INTERPRET") == "1" or "perfkit.kernels" in sys.modules:
        # The kernels are compiled for a GPU: they must be imported without the interpreter, in a fresh process.
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        argv = [sys.executable, "-m", "perfkit", "kernels", "check", *_kernels_argv(args)]
        return subprocess.run(argv, env=env).returncode
    from perfkit.app import kernelcheck
    kernelcheck.avoid_from_reports(args.avoid_from)
    try:
        report = kernelcheck.run_check(args.arch, args.configs, args.batch, args.jobs,
                                       args.precision or kernelcheck.PRECISIONS, args.write_tables,
                                       progress=not args.no_progress)
    except ValueError as exc:
        return _usage_error(parser, "kernels check", str(exc))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=str) + "\n")
    if args.format == "json":
        print(json.dumps(report, indent=1, default=str))
    else:
        print(kernelcheck.format_report(report))
    return 1 if report["failed"] else 0


def _kernels_argv(args) -> list[str]:
    argv = ["--arch", ",".join(args.arch), "--configs", args.configs, "--format", args.format,
            "--batch", str(args.batch)]
    if args.precision:
        argv += ["--precision", ",".join(args.precision)]
    if args.jobs:
        argv += ["--jobs", str(args.jobs)]
    if args.json:
        argv += ["--json", args.json]
    if args.write_tables:
        argv.append("--write-tables")
    for path in args.avoid_from:
        argv += ["--avoid-from", path]
    if args.no_progress:
        argv.append("--no-progress")
    return argv


COMMANDS = {"kernels": cmd_kernels, "run": cmd_run, "study": cmd_study, "layers": cmd_layers, "env": cmd_env, "results": cmd_results,
            "merge": cmd_merge, "dashboard": cmd_dashboard, "campaign": cmd_campaign, "bench": cmd_bench,
            "selfcheck": cmd_selfcheck, "profile": cmd_profile}

if __name__ == "__main__":
    sys.exit(main())
