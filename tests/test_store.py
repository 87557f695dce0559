"""The SQLite store: refuses what is not its own without touching it, resumes runs, merges without duplicates."""
import hashlib
import sqlite3

import pytest

from perfkit.results.records import Measurement
from perfkit.results.store import (APPLICATION_ID, SCHEMA_VERSION, Store, StoreError, load_measurements, load_runs, merge)


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _row(run_id, key, **kw):
    base = dict(run_id=run_id, case_key=key, study="t", variant="alexnet2012", layer="conv1", layer_kind="conv",
                backend="torch", is_baseline=True, device="cpu", dtype="float32", batch=1, pass_name="forward",
                activation="relu", options="{}", env_id="e1", time_median_s=0.5)
    base.update(kw)
    return Measurement(**base)


def _store_with_run(path, env_id="e1", rows=("a", "b"), finish=True):
    store = Store.open(path)
    store.add_environment({"machine_id": env_id}, env_id, f"machine {env_id}")
    run_id, _ = store.start_or_resume_run("t", {"x": 1}, env_id, None, "0.1")
    for key in rows:
        store.add_measurement(_row(run_id, key, env_id=env_id))
    if finish:
        store.finish_run(run_id)
    store.close()
    return run_id


def test_roundtrip_into_one_dataframe(tmp_path):
    run_id = _store_with_run(tmp_path / "s.db")
    df = load_measurements(tmp_path / "s.db")
    assert list(df.case_key) == ["a", "b"]
    assert df.is_baseline.tolist() == [True, True]
    assert (df.machine == "machine e1").all() and (df.run_id == run_id).all()
    assert df.error_rel.isna().all()  # unmeasured stays null, never 0


def test_text_file_is_refused_and_untouched(tmp_path):
    path = tmp_path / "notes.db"
    path.write_text("my notes, not a database\n")
    before = _digest(path)
    with pytest.raises(StoreError, match="not a perfkit store"):
        Store.open(path)
    assert _digest(path) == before
    assert not (tmp_path / "notes.db-wal").exists()


def test_foreign_sqlite_database_is_refused_and_untouched(tmp_path):
    path = tmp_path / "other.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE things (x)")
    con.execute("INSERT INTO things VALUES (1)")
    con.commit()
    con.close()
    before = _digest(path)
    with pytest.raises(StoreError, match="not a perfkit store"):
        Store.open(path)
    with pytest.raises(StoreError):
        merge(tmp_path / "out.db", [path])
    assert _digest(path) == before


def test_newer_schema_is_refused_and_untouched(tmp_path):
    path = tmp_path / "future.db"
    _store_with_run(path)
    con = sqlite3.connect(path)
    con.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    con.execute("PRAGMA journal_mode=DELETE")
    con.close()
    before = _digest(path)
    with pytest.raises(StoreError, match="newer perfkit"):
        Store.open(path)
    with pytest.raises(StoreError, match="newer perfkit"):
        load_measurements(path)
    assert _digest(path) == before


def test_missing_store_is_an_error_for_readers(tmp_path):
    with pytest.raises(StoreError, match="no perfkit store"):
        load_measurements(tmp_path / "absent.db")
    assert not (tmp_path / "absent.db").exists()


def test_unfinished_run_is_resumed_and_finished_run_is_not(tmp_path):
    path = tmp_path / "s.db"
    store = Store.open(path)
    first, resumed = store.start_or_resume_run("t", {"quick": True}, "e1", None, "0.1")
    assert not resumed
    again, resumed = store.start_or_resume_run("t", {"quick": True}, "e1", None, "0.1")
    assert (again, resumed) == (first, True)
    other, resumed = store.start_or_resume_run("t", {"quick": False}, "e1", None, "0.1")
    assert other != first and not resumed  # other arguments: another run
    store.add_measurement(_row(first, "a"))
    assert store.finished_case_keys(first) == {"a"}
    store.finish_run(first)
    fresh, resumed = store.start_or_resume_run("t", {"quick": True}, "e1", None, "0.1")
    assert fresh != first and not resumed
    store.close()


def test_duplicate_case_in_one_run_is_rejected(tmp_path):
    store = Store.open(tmp_path / "s.db")
    run_id, _ = store.start_or_resume_run("t", {}, "e1", None, "0.1")
    store.add_measurement(_row(run_id, "a"))
    with pytest.raises(sqlite3.IntegrityError):
        store.add_measurement(_row(run_id, "a"))
    assert store.measurement_count(run_id) == 1
    store.close()


def test_merge_combines_machines_once(tmp_path):
    a = _store_with_run(tmp_path / "a.db", env_id="gpu-box", rows=("x", "y"))
    b = _store_with_run(tmp_path / "b.db", env_id="laptop", rows=("x",))
    out = tmp_path / "all.db"
    added = merge(out, [tmp_path / "a.db", tmp_path / "b.db"])
    assert added["measurements"] == 3 and added["runs"] == 2 and added["environments"] == 2
    again = merge(out, [tmp_path / "a.db", tmp_path / "b.db"])
    assert again["measurements"] == 0 and again["runs"] == 0
    df = load_measurements(out)
    assert len(df) == 3
    assert set(df.machine) == {"machine gpu-box", "machine laptop"}
    assert set(load_runs(out).run_id) == {a, b}


def test_merge_updates_a_run_that_finished_since(tmp_path):
    src = tmp_path / "src.db"
    store = Store.open(src)
    store.add_environment({}, "e1", "m")
    run_id, _ = store.start_or_resume_run("t", {}, "e1", None, "0.1")
    store.add_measurement(_row(run_id, "a"))
    merge(tmp_path / "out.db", [src])
    assert load_runs(tmp_path / "out.db").finished_at.isna().all()
    store.add_measurement(_row(run_id, "b"))
    store.finish_run(run_id)
    store.close()
    added = merge(tmp_path / "out.db", [src])
    assert added["measurements"] == 1
    assert load_runs(tmp_path / "out.db").finished_at.notna().all()


def test_older_store_gains_new_columns_as_null(tmp_path):
    path = tmp_path / "old.db"
    _store_with_run(path)
    con = sqlite3.connect(path)  # simulate a store written before `timing_note` existed
    con.execute("ALTER TABLE measurements DROP COLUMN timing_note")
    con.commit()
    con.close()
    Store.open(path).close()
    df = load_measurements(path)
    assert "timing_note" in df and df.timing_note.isna().all()
    assert len(df) == 2


def test_store_is_marked_as_perfkit_and_uses_wal(tmp_path):
    path = tmp_path / "s.db"
    Store.open(path).close()
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()


def test_reading_a_store_leaves_nothing_beside_it_and_cannot_write(tmp_path):
    """A read-only SQLite connection closing last keeps a WAL store's -wal and -shm files beside it (results folders
    would carry them); readers close with nothing left, and still cannot change the store."""
    path = tmp_path / "s.db"
    _store_with_run(path)
    before = _digest(path)
    assert len(load_measurements(path)) == 2 and len(load_runs(path)) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.db"]
    assert _digest(path) == before
    from perfkit.results.store import _read_only

    con = _read_only(path)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        con.execute("DELETE FROM measurements")
    con.close()
    assert len(load_measurements(path)) == 2
