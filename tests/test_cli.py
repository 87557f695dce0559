"""The perfkit command: exit codes, formats, and the main job killed and resumed."""
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from perfkit.cli import main
from perfkit.specs import build_network


def perfkit(*args, cwd, timeout=600):
    return subprocess.run([sys.executable, "-m", "perfkit", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("argv, message", [
    (["run", "--device", "gpu"], "invalid device 'gpu'"),
    (["run", "--batch", "0"], "not a positive number"),
    (["run", "--batch", "many"], "not a whole number"),
    (["layers", "--variant", "vgg"], "unknown variant 'vgg'"),
    (["layers", "--format", "xml"], "invalid choice"),
    (["study", "nope"], "unknown study 'nope'"),
    (["study"], "name a study"),
    (["frobnicate"], "invalid choice"),
    ([], "required"),
])
def test_bad_arguments_exit_2_with_a_one_line_hint(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        code = main(argv)
        raise SystemExit(code)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err
    assert len(err.splitlines()) == 1 and "--help" in err


@pytest.mark.parametrize("variant, params", [("alexnet2012", 60_965_224), ("owt", 61_100_840)])
def test_layers_json_gives_the_parameter_total(variant, params, capsys):
    assert main(["layers", "--variant", variant, "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["total"]["params"] == params
    assert [row["layer"] for row in data["layers"]] == list(build_network(variant).layer_names)


def test_layers_csv_and_table(capsys):
    assert main(["layers", "--format", "csv", "--batch", "128"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("layer,kind,description")
    assert lines[-1].startswith("total,")
    assert main(["layers"]) == 0
    assert "a multiply-add is 2 FLOPs" in capsys.readouterr().out


def test_env_json_never_probes_gpus_by_default(capsys):
    assert main(["env", "--format", "json"]) == 0
    env = json.loads(capsys.readouterr().out)
    assert env["gpus"] is None and "not probed" in env["gpu_note"]
    assert env["torch"] and env["env_id"]


def test_results_on_a_missing_store_is_a_clear_failure(tmp_path, capsys):
    assert main(["results", "--store", str(tmp_path / "none.db")]) == 1
    assert "no perfkit store" in capsys.readouterr().err
    assert not (tmp_path / "none.db").exists()


def test_run_refuses_a_file_that_is_not_a_store(tmp_path, capsys):
    path = tmp_path / "data.db"
    path.write_text("precious\n")
    assert main(["run", "--quick", "--device", "cpu", "--store", str(path), "--no-progress"]) == 1
    assert "not a perfkit store" in capsys.readouterr().err
    assert path.read_text() == "precious\n"


def _rows(path):
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return con.execute("SELECT COUNT(*) FROM measurements").fetchone()[0]
    except sqlite3.OperationalError:  # tables not created yet
        return 0
    finally:
        con.close()


def test_main_job_killed_mid_way_resumes_and_stores_every_case_once(tmp_path):
    """`perfkit run` is SIGKILLed after a few cases; the rerun resumes the same run, and in the end every layer of
    alexnet2012 and the whole network, forward and train_step, is stored exactly once, with no corrupt row."""
    store = tmp_path / "perfkit.db"
    args = ["run", "--quick", "--device", "cpu", "--batch", "1", "--no-progress", "--store", str(store)]
    proc = subprocess.Popen([sys.executable, "-m", "perfkit", *args], cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if store.exists() and _rows(store) >= 6:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = _rows(store)
    expected = 2 * (len(build_network("alexnet2012").layers) + 1)
    assert 6 <= killed_at < expected

    con = sqlite3.connect(store)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()

    done = perfkit(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "resumed unfinished run" in done.stderr

    listed = perfkit("results", "--store", str(store), "--format", "json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    keys = [r["case_key"] for r in rows]
    assert len(keys) == len(set(keys)) == expected
    assert len({r["run_id"] for r in rows}) == 1
    assert all(r["status"] == "ok" and r["time_median_s"] > 0 for r in rows)
    layers = {(r["layer"], r["pass_name"]) for r in rows}
    for name in list(build_network("alexnet2012").layer_names) + ["network"]:
        assert {(name, "forward"), (name, "train_step")} <= layers, name

    # and the main job's dashboard, beside the store, needs no network
    report = (tmp_path / "perfkit-report.html").read_text()
    assert "dashboard:" in done.stderr and "<script" in report
    assert not re.search(r"<(script|link)[^>]+(src|href)=[\"']?(https?:)?//", report)


def test_merge_command(tmp_path, capsys):
    from perfkit.store import Store

    for name in ("a", "b"):
        store = Store.open(tmp_path / f"{name}.db")
        store.add_environment({}, name, name)
        store.start_or_resume_run("t", {}, name, None, "0")
        store.close()
    out = tmp_path / "all.db"
    assert main(["merge", str(out), str(tmp_path / "a.db"), str(tmp_path / "b.db")]) == 0
    assert "2 runs, 0 measurements" in capsys.readouterr().out
    assert main(["merge", str(out), str(tmp_path / "missing.db")]) == 1
    assert "no perfkit store" in capsys.readouterr().err
