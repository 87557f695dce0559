"""The store: one SQLite file (stdlib sqlite3, WAL) holding runs and their measurements.

Tables:
- `environments`: one row per environment fingerprint (machine and software), the full description as JSON.
- `runs`: a study run: its arguments, start and end, git commit, perfkit version and environment.
- `measurements`: one row per case (the columns of `perfkit.results.records.Measurement`), unique per (run_id, case_key).
- `summaries`: the summary a study printed, as text and as JSON data.
- `power_samples`: the power timeline of a case's energy window (one row per sample, `t_s` seconds from the window's
  start, `power_w` watts, `source` the NVML reading), linked to its measurement by (run_id, case_key).
- `device_peaks`: per run, device, dtype and CPU thread count, the measured matmul rate and copy bandwidth the rows'
  roofline fields use.
- `training_curves`: the points of a training run (the activations study's convergence runs), linked to its
  measurement by (run_id, case_key): `epoch` (epochs completed, fractions within an epoch), `step` (SGD steps),
  `images` (trained on), `train_error` (fraction of the evaluation images, taken from the training set, that the model
  misclassifies at that point), `running_error` and `loss` (misclassified fraction and mean loss over the batches
  trained on since the previous point, as they were trained), `wall_s` (training wall-clock seconds to that point,
  evaluation excluded), `eval_s` (seconds that point's evaluation took), `eval_images`.

- `profiles`: per profiled case (`perfkit profile`), linked to its measurement by (run_id, case_key): the trace file
  (gzipped Chrome trace JSON, relative to the store's folder), the profiled steps, the profiled step's mean duration
  `profiled_step_s` beside the timer's `timed_median_s` and their ratio `profiled_over_timed` (the profiler's
  overhead), launches per step (CUDA kernels, memcpys and memsets on a GPU; top-level aten op calls on a CPU) and, on
  a GPU, the share of the step in which no kernel ran; each null with its `*_note` when not measured.
- `profile_ops`: the breakdown of a profiled case, one row per op or kernel name and layer: `kind` (aten op, CUDA
  kernel, perfkit Triton kernel, cuDNN/cuBLAS/CUTLASS kernel, memcpy, memset, ...), `layer` (or the named non-layer
  part: optimizer, zero_grad, ...), `on_device` (a GPU kernel rather than host work), calls, total and self seconds
  per step, and self time's share of the step.
- `ncu_kernels`: per kernel of a case run under Nsight Compute (`perfkit profile --ncu`): achieved SM and DRAM
  throughput and achieved occupancy as % of peak, and tensor-pipe use.

Schema versions: 1 had the first four tables; 2 added `power_samples`, `device_peaks` and the harness's measurement
columns; 3 added `training_curves`; 4 added `profiles`, `profile_ops` and
`ncu_kernels`; 5 added the measurement columns `graphs_compiled`, `compiles_in_window` and `compile_note`. Opening an older store adds what it lacks (new columns read as NULL); merging an older store into a newer one
copies the tables it has.

Each measurement is committed as its case finishes, so a killed study loses at most the case in flight. Rerunning the
same study with the same arguments on the same machine resumes its unfinished run and skips the cases it already has.
Run ids are UUIDs, so stores from many machines merge without collisions (`merge`).

A file that is not a perfkit store, or was written by a newer perfkit, is refused with a `StoreError` and never
written to: the SQLite header, the application id and the schema version are checked through a read-only connection
before anything is opened for writing.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import sqlite3
import uuid
from dataclasses import asdict, fields
from pathlib import Path
from typing import Iterable, Sequence

from perfkit.results.records import MEASUREMENT_FIELDS, Measurement

SCHEMA_VERSION = 5
APPLICATION_ID = 0x50464B54  # "PFKT" in the SQLite header: marks the file as a perfkit store
DEFAULT_STORE = "perfkit.db"
STORE_ENV_VAR = "PERFKIT_STORE"
_SQLITE_MAGIC = b"SQLite format 3\x00"


class StoreError(Exception):
    """The file cannot be used as a perfkit store; it has been left as it was."""


def default_store_path() -> str:
    return os.environ.get(STORE_ENV_VAR) or DEFAULT_STORE


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def _sql_type(annotation: str) -> str:
    if annotation.startswith("int") or annotation.startswith("bool"):
        return "INTEGER"
    if annotation.startswith("float"):
        return "REAL"
    return "TEXT"


MEASUREMENT_COLUMNS = {f.name: _sql_type(str(f.type)) for f in fields(Measurement)}
_BOOL_COLUMNS = [f.name for f in fields(Measurement) if str(f.type).startswith("bool")]

_TABLES = {
    "environments": """CREATE TABLE environments (
        env_id TEXT PRIMARY KEY, machine_id TEXT, label TEXT, data TEXT NOT NULL)""",
    "runs": """CREATE TABLE runs (
        run_id TEXT PRIMARY KEY, study TEXT NOT NULL, args TEXT NOT NULL, args_key TEXT NOT NULL,
        env_id TEXT NOT NULL, started_at TEXT NOT NULL, finished_at TEXT, git_commit TEXT, perfkit_version TEXT,
        cases_planned INTEGER)""",
    "measurements": "CREATE TABLE measurements (id INTEGER PRIMARY KEY, "
                    + ", ".join(f"{name} {typ}" for name, typ in MEASUREMENT_COLUMNS.items())
                    + ", UNIQUE (run_id, case_key))",
    "summaries": """CREATE TABLE summaries (
        run_id TEXT NOT NULL, study TEXT NOT NULL, created_at TEXT NOT NULL, text TEXT, data TEXT,
        PRIMARY KEY (run_id, study))""",
    "power_samples": """CREATE TABLE power_samples (
        run_id TEXT NOT NULL, case_key TEXT NOT NULL, sample_index INTEGER NOT NULL, t_s REAL NOT NULL,
        power_w REAL NOT NULL, source TEXT,
        UNIQUE (run_id, case_key, sample_index))""",
    "device_peaks": """CREATE TABLE device_peaks (
        run_id TEXT NOT NULL, device TEXT NOT NULL, device_name TEXT, dtype TEXT NOT NULL, threads INTEGER NOT NULL,
        matmul_flops_per_s REAL, copy_bytes_per_s REAL, method TEXT, measured_at TEXT, note TEXT,
        UNIQUE (run_id, device, dtype, threads))""",
    "training_curves": """CREATE TABLE training_curves (
        run_id TEXT NOT NULL, case_key TEXT NOT NULL, point_index INTEGER NOT NULL, epoch REAL NOT NULL,
        step INTEGER NOT NULL, images INTEGER, train_error REAL, running_error REAL, loss REAL, wall_s REAL NOT NULL,
        eval_s REAL, eval_images INTEGER,
        UNIQUE (run_id, case_key, point_index))""",
    "profiles": """CREATE TABLE profiles (
        run_id TEXT NOT NULL, case_key TEXT NOT NULL, trace_path TEXT, steps INTEGER, profiled_step_s REAL,
        timed_median_s REAL, profiled_over_timed REAL, launches_per_step REAL, launches_note TEXT,
        gpu_idle_share REAL, gpu_idle_note TEXT, profiled_at TEXT, note TEXT,
        UNIQUE (run_id, case_key))""",
    "profile_ops": """CREATE TABLE profile_ops (
        run_id TEXT NOT NULL, case_key TEXT NOT NULL, op_index INTEGER NOT NULL, name TEXT NOT NULL,
        kind TEXT NOT NULL, layer TEXT NOT NULL, on_device INTEGER NOT NULL, calls_per_step REAL,
        total_s_per_step REAL, self_s_per_step REAL, share_of_step REAL,
        UNIQUE (run_id, case_key, op_index))""",
    "ncu_kernels": """CREATE TABLE ncu_kernels (
        run_id TEXT NOT NULL, case_key TEXT NOT NULL, kernel_index INTEGER NOT NULL, kernel TEXT NOT NULL,
        sm_throughput_pct REAL, dram_throughput_pct REAL, achieved_occupancy_pct REAL, tensor_pipe_pct REAL,
        UNIQUE (run_id, case_key, kernel_index))""",
}
PROFILE_COLUMNS = ("run_id", "case_key", "trace_path", "steps", "profiled_step_s", "timed_median_s",
                   "profiled_over_timed", "launches_per_step", "launches_note", "gpu_idle_share", "gpu_idle_note",
                   "profiled_at", "note")
#: The columns of one op of a breakdown (after run_id, case_key, op_index).
PROFILE_OP_COLUMNS = ("name", "kind", "layer", "on_device", "calls_per_step", "total_s_per_step", "self_s_per_step",
                      "share_of_step")
NCU_COLUMNS = ("kernel", "sm_throughput_pct", "dram_throughput_pct", "achieved_occupancy_pct", "tensor_pipe_pct")
DEVICE_PEAK_COLUMNS = ("run_id", "device", "device_name", "dtype", "threads", "matmul_flops_per_s", "copy_bytes_per_s",
                       "method", "measured_at", "note")
#: The columns of a training curve's point (after run_id, case_key, point_index).
TRAINING_POINT_COLUMNS = ("epoch", "step", "images", "train_error", "running_error", "loss", "wall_s", "eval_s",
                          "eval_images")
TRAINING_CURVE_COLUMNS = ("run_id", "case_key", "point_index", *TRAINING_POINT_COLUMNS)


def _check_existing(path: Path) -> int | None:
    """The schema version of an existing perfkit store at `path`, None if there is no file (or an empty one).
    Raises StoreError, touching nothing, if the file is not a perfkit store or is too new."""
    if not path.exists() or path.stat().st_size == 0:
        return None
    if path.is_dir():
        raise StoreError(f"{path} is a directory, not a perfkit store")
    with path.open("rb") as f:
        if f.read(16) != _SQLITE_MAGIC:
            raise StoreError(f"{path} is not a perfkit store (not an SQLite database); it was left untouched")
    try:
        con = _connect_for_reading(path)
        try:
            app_id = con.execute("PRAGMA application_id").fetchone()[0]
            version = con.execute("PRAGMA user_version").fetchone()[0]
        finally:
            con.close()
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path} could not be read as a perfkit store ({exc}); it was left untouched") from None
    if app_id != APPLICATION_ID:
        raise StoreError(f"{path} is an SQLite database but not a perfkit store (application id {app_id:#x}); "
                         "it was left untouched")
    if version > SCHEMA_VERSION:
        raise StoreError(f"{path} was written by a newer perfkit (store schema {version}; this perfkit reads up to "
                         f"{SCHEMA_VERSION}): upgrade perfkit to use it. The file was left untouched.")
    return version


class Store:
    """A perfkit store opened for reading and appending. Use `Store.open(path)`."""

    def __init__(self, path: Path, con: sqlite3.Connection):
        self.path = path
        self.con = con

    @classmethod
    def open(cls, path: str | os.PathLike | None = None, create: bool = True, wal: bool | None = None) -> Store:
        """The journal mode is the file's own and persists: a new store is made in WAL mode (readers proceed during a
        long study's writes) unless `wal=False`; an existing one keeps its mode unless `wal` says otherwise.
        Rollback-journal mode (`wal=False`) puts every commit in the file itself, with no -wal or -shm file beside
        it (a -journal exists only during a write): the campaign's folder must hold valid files after each case, and
        every later opening, by a study or a torchrun worker, keeps that mode."""
        path = Path(path or default_store_path())
        version = _check_existing(path)
        if version is None and not create:
            raise StoreError(f"no perfkit store at {path} (run `perfkit run` to make one, or pass --store PATH)")
        if version is None and path.parent and not path.parent.exists():
            raise StoreError(f"cannot create a store at {path}: directory {path.parent} does not exist")
        con = sqlite3.connect(path.resolve().as_uri(), uri=True, timeout=60, isolation_level=None)
        if wal is None:
            wal = version is None or con.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
        if wal:
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")  # in WAL mode durable across process crashes, not power loss
        else:
            con.execute("PRAGMA journal_mode=DELETE")  # also turns a WAL store back into a single file
        store = cls(path, con)
        store._create_or_migrate(version)
        return store

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- schema ---------------------------------------------------------------------------------------------------
    def _create_or_migrate(self, version: int | None) -> None:
        with self.transaction():
            if version is None or version == 0:
                if version == 0 and self._tables():
                    raise StoreError(f"{self.path} has tables but no perfkit schema version; it was left untouched")
                self.con.execute(f"PRAGMA application_id={APPLICATION_ID}")
            existing = self._tables()
            for name, ddl in _TABLES.items():
                if name not in existing:
                    self.con.execute(ddl)
            # Additive migration: a column added to Measurement since the store was written appears as NULL.
            have = {row[1] for row in self.con.execute("PRAGMA table_info(measurements)")}
            for name, typ in MEASUREMENT_COLUMNS.items():
                if name not in have:
                    self.con.execute(f"ALTER TABLE measurements ADD COLUMN {name} {typ}")
            self.con.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def _tables(self) -> set[str]:
        return {r[0] for r in self.con.execute("SELECT name FROM sqlite_master WHERE type='table'")}

    def transaction(self):
        return _Transaction(self.con)

    # -- runs -----------------------------------------------------------------------------------------------------
    def add_environment(self, env: dict, env_id: str, label: str) -> None:
        with self.transaction():
            self.con.execute("INSERT OR IGNORE INTO environments (env_id, machine_id, label, data) VALUES (?, ?, ?, ?)",
                             (env_id, env.get("machine_id"), label, json.dumps(env, sort_keys=True, default=str)))

    def start_or_resume_run(self, study: str, args: dict, env_id: str, git_commit: str | None,
                            perfkit_version: str, cases_planned: int | None = None,
                            resume: bool = True) -> tuple[str, bool]:
        """The id of the run to record into, and whether it resumes an unfinished one (same study, arguments and
        environment)."""
        args_key = json.dumps(args, sort_keys=True, default=str)
        with self.transaction():
            if resume:
                row = self.con.execute(
                    "SELECT run_id FROM runs WHERE study=? AND args_key=? AND env_id=? AND finished_at IS NULL "
                    "ORDER BY started_at DESC LIMIT 1", (study, args_key, env_id)).fetchone()
                if row:
                    return row[0], True
            run_id = str(uuid.uuid4())
            self.con.execute(
                "INSERT INTO runs (run_id, study, args, args_key, env_id, started_at, git_commit, perfkit_version, "
                "cases_planned) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, study, json.dumps(args, default=str), args_key, env_id, utc_now(), git_commit,
                 perfkit_version, cases_planned))
        return run_id, False

    def case_statuses(self, run_id: str) -> dict[str, str]:
        """{case key: status} of the rows a run has stored."""
        cur = self.con.execute("SELECT case_key, status FROM measurements WHERE run_id=?", (run_id,))
        return dict(cur.fetchall())

    def stored_rows(self, run_id: str, case_keys: Sequence[str]) -> list[Measurement]:
        """The stored rows of these cases of a run, as Measurements, in the order of `case_keys` (missing ones left
        out)."""
        if not case_keys:
            return []
        marks = ", ".join("?" for _ in case_keys)
        cur = self.con.execute(f"SELECT {', '.join(MEASUREMENT_FIELDS)} FROM measurements WHERE run_id=? AND "
                               f"case_key IN ({marks})", (run_id, *case_keys))
        by_key = {r[1]: Measurement(**dict(zip(MEASUREMENT_FIELDS, r))) for r in cur}
        return [by_key[k] for k in case_keys if k in by_key]

    def finished_run_id(self, study: str, args: dict, env_id: str) -> str | None:
        """The latest finished run of `study` with these arguments on this environment, or None (the campaign's
        second command skips what its first one finished)."""
        args_key = json.dumps(args, sort_keys=True, default=str)
        row = self.con.execute("SELECT run_id FROM runs WHERE study=? AND args_key=? AND env_id=? AND finished_at IS "
                               "NOT NULL ORDER BY finished_at DESC LIMIT 1", (study, args_key, env_id)).fetchone()
        return row[0] if row else None

    def finish_run(self, run_id: str) -> None:
        with self.transaction():
            self.con.execute("UPDATE runs SET finished_at=? WHERE run_id=?", (utc_now(), run_id))

    def finished_case_keys(self, run_id: str) -> set[str]:
        return {r[0] for r in self.con.execute("SELECT case_key FROM measurements WHERE run_id=?", (run_id,))}

    # -- rows -----------------------------------------------------------------------------------------------------
    def add_measurement(self, m: Measurement, power_samples: Sequence = (), training_curve: Sequence = ()) -> None:
        """Append one row, its power timeline (objects with t_s, power_w, source) and its training curve (objects with
        the TRAINING_POINT_COLUMNS as attributes), and commit them together."""
        row = asdict(m)
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        with self.transaction():
            self.con.execute(f"INSERT INTO measurements ({cols}) VALUES ({marks})", tuple(row.values()))
            self.con.executemany(
                "INSERT INTO power_samples (run_id, case_key, sample_index, t_s, power_w, source) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(m.run_id, m.case_key, i, s.t_s, s.power_w, s.source) for i, s in enumerate(power_samples)])
            if training_curve:
                self.con.executemany(
                    f"INSERT INTO training_curves ({', '.join(TRAINING_CURVE_COLUMNS)}) "
                    f"VALUES ({', '.join('?' for _ in TRAINING_CURVE_COLUMNS)})",
                    [(m.run_id, m.case_key, i, *(getattr(p, c) for c in TRAINING_POINT_COLUMNS))
                     for i, p in enumerate(training_curve)])

    def add_device_peak(self, peak: dict) -> None:
        """Store one device's peaks for a run and dtype (a dict with DEVICE_PEAK_COLUMNS); the first one stays."""
        cols = ", ".join(DEVICE_PEAK_COLUMNS)
        marks = ", ".join("?" for _ in DEVICE_PEAK_COLUMNS)
        with self.transaction():
            self.con.execute(f"INSERT OR IGNORE INTO device_peaks ({cols}) VALUES ({marks})",
                             tuple(peak.get(c) for c in DEVICE_PEAK_COLUMNS))

    def device_peaks(self, run_id: str) -> dict[tuple[str, str, int], dict]:
        """The peaks stored for a run, by (device, dtype, torch CPU threads they were measured with)."""
        cur = self.con.execute(f"SELECT {', '.join(DEVICE_PEAK_COLUMNS)} FROM device_peaks WHERE run_id=?", (run_id,))
        return {(r[1], r[3], r[4]): dict(zip(DEVICE_PEAK_COLUMNS, r)) for r in cur}

    def machine_device_peaks(self, env_id: str) -> dict[tuple[str, str, int], dict]:
        """The first peaks measured in any run of this store on the same environment (machine and software), by
        (device, dtype, threads): a later study run on the same machine reuses them rather than measuring again.
        Only measured values count: a peak whose measurement failed is measured again."""
        cols = ", ".join(f"p.{c}" for c in DEVICE_PEAK_COLUMNS)
        cur = self.con.execute(
            f"SELECT {cols} FROM device_peaks p JOIN runs r ON r.run_id = p.run_id WHERE r.env_id=? "
            "AND p.matmul_flops_per_s IS NOT NULL AND p.copy_bytes_per_s IS NOT NULL ORDER BY p.measured_at", (env_id,))
        found: dict = {}
        for r in cur:
            found.setdefault((r[1], r[3], r[4]), dict(zip(DEVICE_PEAK_COLUMNS, r)))
        return found

    def checkpoint(self) -> None:
        """Fold the write-ahead log into the store file and empty it, so that a copy of the file alone holds every
        committed row (used after each case by the campaign, whose folder may be taken away at any moment)."""
        self.con.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def add_profile(self, profile: dict, ops: Sequence = (), ncu: Sequence = ()) -> None:
        """Store a profiled case (a dict with PROFILE_COLUMNS), its breakdown (objects with PROFILE_OP_COLUMNS as
        attributes) and its Nsight Compute kernels (objects with NCU_COLUMNS), replacing an earlier profile of the
        same case in the same run, and commit them together."""
        key = (profile["run_id"], profile["case_key"])
        with self.transaction():
            for table in ("profiles", "profile_ops", "ncu_kernels"):
                self.con.execute(f"DELETE FROM {table} WHERE run_id=? AND case_key=?", key)
            self.con.execute(f"INSERT INTO profiles ({', '.join(PROFILE_COLUMNS)}) "
                             f"VALUES ({', '.join('?' for _ in PROFILE_COLUMNS)})",
                             tuple(profile.get(c) for c in PROFILE_COLUMNS))
            self.con.executemany(
                f"INSERT INTO profile_ops (run_id, case_key, op_index, {', '.join(PROFILE_OP_COLUMNS)}) "
                f"VALUES (?, ?, ?, {', '.join('?' for _ in PROFILE_OP_COLUMNS)})",
                [(*key, i, *(getattr(op, c) for c in PROFILE_OP_COLUMNS)) for i, op in enumerate(ops)])
            self.con.executemany(
                f"INSERT INTO ncu_kernels (run_id, case_key, kernel_index, {', '.join(NCU_COLUMNS)}) "
                f"VALUES (?, ?, ?, {', '.join('?' for _ in NCU_COLUMNS)})",
                [(*key, i, *(getattr(k, c) for c in NCU_COLUMNS)) for i, k in enumerate(ncu)])

    def add_summary(self, run_id: str, study: str, text: str, data: dict | None = None) -> None:
        with self.transaction():
            self.con.execute("INSERT OR REPLACE INTO summaries (run_id, study, created_at, text, data) "
                             "VALUES (?, ?, ?, ?, ?)",
                             (run_id, study, utc_now(), text, json.dumps(data, default=str) if data else None))

    def measurement_count(self, run_id: str | None = None) -> int:
        if run_id is None:
            return self.con.execute("SELECT COUNT(*) FROM measurements").fetchone()[0]
        return self.con.execute("SELECT COUNT(*) FROM measurements WHERE run_id=?", (run_id,)).fetchone()[0]


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on an exception (the connection runs in autocommit mode)."""

    def __init__(self, con: sqlite3.Connection):
        self.con = con

    def __enter__(self):
        self.con.execute("BEGIN IMMEDIATE")
        return self.con

    def __exit__(self, exc_type, exc, tb):
        self.con.execute("ROLLBACK" if exc_type else "COMMIT")
        return False


# -- reading ------------------------------------------------------------------------------------------------------------
_MEASUREMENTS_QUERY = """
SELECT m.*, r.study AS run_study, r.started_at AS run_started_at, r.finished_at AS run_finished_at,
       r.git_commit, r.perfkit_version, e.machine_id, e.label AS machine
FROM measurements m JOIN runs r ON r.run_id = m.run_id LEFT JOIN environments e ON e.env_id = m.env_id
"""


def _connect_for_reading(path: Path) -> sqlite3.Connection:
    """A connection that cannot change the store. Opened read-write with writes refused (query_only) where the file
    allows it, because SQLite removes a WAL store's -wal and -shm files only when the last connection to close could
    write: a store read last through a read-only connection keeps them beside it. A read-only file gets a read-only
    connection that treats it as immutable."""
    uri = path.resolve().as_uri()
    con = None
    try:
        con = sqlite3.connect(f"{uri}?mode=rw", uri=True)
        con.execute("PRAGMA query_only=ON")
        con.execute("SELECT count(*) FROM sqlite_master").fetchone()  # opens the file (and its -shm) now
        return con
    except sqlite3.OperationalError:
        if con is not None:
            con.close()
    # A file we may not write, or in a folder we may not write (where a WAL store cannot even be read normally, as
    # its -shm file cannot be made): read it as immutable, which it is to us.
    return sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True)


def _read_only(path: str | os.PathLike) -> sqlite3.Connection:
    path = Path(path)
    if _check_existing(path) is None:
        raise StoreError(f"no perfkit store at {path}")
    return _connect_for_reading(path)


def _read_tables(paths: Sequence[str | os.PathLike], query: str, keys: Sequence[str], table: str | None = None):
    """`query` over each store, concatenated, with a `store` column; duplicates by `keys` dropped. A store older than
    `table` (the table the query needs) contributes no rows."""
    import pandas as pd

    frames = []
    for path in paths:
        con = _read_only(path)
        try:
            if table and not con.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?",
                                         (table,)).fetchone():
                continue
            frame = pd.read_sql_query(query, con)
        finally:
            con.close()
        frame["store"] = str(path)
        frames.append(frame)
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if len(df) and keys:
        df = df.drop_duplicates(subset=list(keys), keep="first").reset_index(drop=True)
    return df


def load_measurements(*paths: str | os.PathLike):
    """Every measurement of one or more stores as one pandas DataFrame, with each row's run and machine columns
    (`machine`, `machine_id`, `git_commit`, ...). Rows present in several stores appear once."""
    df = _read_tables(paths or (default_store_path(),), _MEASUREMENTS_QUERY, ("run_id", "case_key"))
    for col in _BOOL_COLUMNS:
        if col in df:
            df[col] = df[col].astype("boolean")
    return df.drop(columns=["id"], errors="ignore")


def load_runs(*paths: str | os.PathLike):
    """Runs with their environment description (`env` as a dict) and machine label."""
    df = _read_tables(paths or (default_store_path(),),
                      "SELECT r.*, e.machine_id, e.label AS machine, e.data AS env FROM runs r "
                      "LEFT JOIN environments e ON e.env_id = r.env_id", ("run_id",))
    if len(df):
        df["env"] = df["env"].map(lambda s: json.loads(s) if s else {})
        df["args"] = df["args"].map(json.loads)
    return df


def load_environments(*paths: str | os.PathLike):
    """Environment fingerprints: env_id, machine_id, label and the full description (`data`, a dict)."""
    df = _read_tables(paths or (default_store_path(),), "SELECT * FROM environments", ("env_id",))
    if len(df):
        df["data"] = df["data"].map(lambda s: json.loads(s) if s else {})
    return df


def load_summaries(*paths: str | os.PathLike):
    df = _read_tables(paths or (default_store_path(),), "SELECT * FROM summaries", ("run_id", "study"))
    if len(df):
        df["data"] = df["data"].map(lambda s: json.loads(s) if s else None)
    return df


def load_power_samples(*paths: str | os.PathLike):
    """Every power sample of one or more stores: run_id, case_key, sample_index, t_s (seconds from the start of the
    case's energy window), power_w, source. Join with `load_measurements` on (run_id, case_key)."""
    df = _read_tables(paths or (default_store_path(),), "SELECT * FROM power_samples ORDER BY run_id, case_key, "
                      "sample_index", ("run_id", "case_key", "sample_index"), table="power_samples")
    if df.empty:
        import pandas as pd

        return pd.DataFrame(columns=["run_id", "case_key", "sample_index", "t_s", "power_w", "source", "store"])
    return df


def load_device_peaks(*paths: str | os.PathLike):
    """The measured device peaks of one or more stores: run_id, device, device_name, dtype, matmul_flops_per_s,
    copy_bytes_per_s, method, measured_at, note."""
    df = _read_tables(paths or (default_store_path(),), "SELECT * FROM device_peaks",
                      ("run_id", "device", "dtype", "threads"),
                      table="device_peaks")
    if df.empty:
        import pandas as pd

        return pd.DataFrame(columns=[*DEVICE_PEAK_COLUMNS, "store"])
    return df


def load_training_curves(*paths: str | os.PathLike):
    """Every training-curve point of one or more stores: run_id, case_key, point_index and TRAINING_POINT_COLUMNS
    (see the module docstring). Join with `load_measurements` on (run_id, case_key) for the run's activation, learning
    rate (the row's `options`), device and backend. A store older than schema 3 has none."""
    df = _read_tables(paths or (default_store_path(),), "SELECT * FROM training_curves ORDER BY run_id, case_key, "
                      "point_index", ("run_id", "case_key", "point_index"), table="training_curves")
    if df.empty:
        import pandas as pd

        return pd.DataFrame(columns=[*TRAINING_CURVE_COLUMNS, "store"])
    return df


def _load_table(paths, table: str, order: str, keys: Sequence[str], columns: Sequence[str]):
    """Every row of `table` in one or more stores (none from a store older than the table), with a `store` column."""
    df = _read_tables(paths or (default_store_path(),), f"SELECT * FROM {table} ORDER BY {order}", keys, table=table)
    if df.empty:
        import pandas as pd

        return pd.DataFrame(columns=[*columns, "store"])
    return df


def load_profiles(*paths: str | os.PathLike):
    """The profiled cases of one or more stores (PROFILE_COLUMNS; see the module docstring). Join with
    `load_measurements` on (run_id, case_key). A store older than schema 4 has none."""
    return _load_table(paths, "profiles", "run_id, case_key", ("run_id", "case_key"), PROFILE_COLUMNS)


def load_profile_ops(*paths: str | os.PathLike):
    """The breakdowns of the profiled cases: run_id, case_key, op_index and PROFILE_OP_COLUMNS."""
    return _load_table(paths, "profile_ops", "run_id, case_key, op_index", ("run_id", "case_key", "op_index"),
                       ("run_id", "case_key", "op_index", *PROFILE_OP_COLUMNS))


def load_ncu_kernels(*paths: str | os.PathLike):
    """Nsight Compute's figures per kernel: run_id, case_key, kernel_index and NCU_COLUMNS."""
    return _load_table(paths, "ncu_kernels", "run_id, case_key, kernel_index", ("run_id", "case_key", "kernel_index"),
                       ("run_id", "case_key", "kernel_index", *NCU_COLUMNS))


# -- merging ------------------------------------------------------------------------------------------------------------
def merge(out: str | os.PathLike, inputs: Iterable[str | os.PathLike]) -> dict[str, int]:
    """Copy every run, environment, measurement, summary, power sample, device peak, training-curve point and profile of
    `inputs`
    into the store `out` (created if missing), skipping what `out` already holds. Each input is merged in one
    transaction, so an error leaves `out` with whole inputs only. A run merged while unfinished and again once finished gets its end time.
    Returns the number of rows added per table."""
    inputs = [Path(p) for p in inputs]
    for path in inputs:  # validate every input before writing anything
        if _check_existing(path) is None:
            raise StoreError(f"no perfkit store at {path}")
    store = Store.open(out)
    added = {name: 0 for name in _TABLES}
    try:
        out_resolved = store.path.resolve()
        for path in inputs:
            if path.resolve() == out_resolved:
                continue
            store.con.execute("ATTACH DATABASE ? AS src", (f"{path.resolve().as_uri()}?mode=ro",))
            try:
                with store.transaction() as con:
                    for table in _TABLES:
                        added[table] += _merge_table(con, table)
            finally:
                store.con.execute("DETACH DATABASE src")
    finally:
        store.close()
    return added


def _merge_table(con: sqlite3.Connection, table: str, alias: str = "src") -> int:
    have = [r[1] for r in con.execute(f"PRAGMA main.table_info({table})")]
    theirs = {r[1] for r in con.execute(f"PRAGMA {alias}.table_info({table})")}
    if not theirs:  # an older store without this table
        return 0
    cols = [c for c in have if c in theirs and c != "id"]
    col_list = ", ".join(cols)
    before = con.total_changes
    con.execute(f"INSERT OR IGNORE INTO main.{table} ({col_list}) SELECT {col_list} FROM {alias}.{table}")
    added = con.total_changes - before
    if table == "runs":
        con.execute(f"UPDATE main.runs SET finished_at = (SELECT s.finished_at FROM {alias}.runs s "
                    f"WHERE s.run_id = main.runs.run_id) WHERE finished_at IS NULL AND run_id IN "
                    f"(SELECT run_id FROM {alias}.runs WHERE finished_at IS NOT NULL)")
    return added
