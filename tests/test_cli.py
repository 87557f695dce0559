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
import torch

from perfkit.app.cli import main
from perfkit.specs import build_network
from perfkit.studies import baseline
from perfkit.study import StudyOptions


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
    # every layer and the network on stock eager, and the CPU baselines beside it (studies/baseline.py)
    expected = len(baseline.cases(StudyOptions(devices=("cpu",), quick=True, batch=1)))
    assert expected > 2 * (len(build_network("alexnet2012").layers) + 1)
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
    assert all(r["status"] == "ok" and r["time_median_s"] > 0 for r in rows), \
        [(r["case_key"], r["note"]) for r in rows if r["status"] != "ok"]
    assert {r["backend"] for r in rows} == {"torch", "channels_last", "compile", "onnxruntime"}
    layers = {(r["layer"], r["pass_name"]) for r in rows}
    for name in list(build_network("alexnet2012").layer_names) + ["network"]:
        assert {(name, "forward"), (name, "train_step")} <= layers, name

    # and the main job's dashboard, beside the store, needs no network
    report = (tmp_path / "perfkit-report.html").read_text()
    assert "dashboard:" in done.stderr and "<script" in report
    assert not re.search(r"<(script|link)[^>]+(src|href)=[\"']?(https?:)?//", report)


def test_merge_command(tmp_path, capsys):
    from perfkit.results.store import Store

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


# -- an explicit device that is absent ----------------------------------------------------------------------------------
@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("command,device", [(["run", "--quick"], "cuda"), (["study", "baseline", "--quick"], "cuda:1"),
                                            (["campaign", "--quick"], "cuda"), (["selfcheck", "timer"], "cuda")])
def test_asking_for_an_absent_gpu_exits_1_before_running_anything(tmp_path, command, device):
    store, out = tmp_path / "perfkit.db", tmp_path / "campaign"
    where = ["--out", str(out)] if command[0] == "campaign" else [] if command[0] == "selfcheck" else \
        ["--store", str(store)]
    done = perfkit(*command, "--device", device, *where, cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert f"--device {device}:" in done.stderr and "no CUDA support" in done.stderr
    assert "Nothing was run" in done.stderr and done.stdout == ""
    assert not store.exists() and not out.exists() and not (tmp_path / "perfkit-report.html").exists()


def test_the_reason_names_a_missing_driver_and_an_index_out_of_range(monkeypatch, tmp_path):
    from perfkit import study

    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(study, "Path", lambda _: tmp_path / "no-driver")
    assert "no NVIDIA driver is loaded" in study.absent_device_reason("cuda")
    monkeypatch.setattr(study, "Path", lambda _: tmp_path)  # a driver file exists
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert "finds no usable GPU although a driver is loaded" in study.absent_device_reason("cuda:0")
    assert "CUDA_VISIBLE_DEVICES=''" in study.absent_device_reason("cuda:0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert study.absent_device_reason("cuda:1") is None
    assert study.absent_device_reason("cuda:2") == "cuda:2 is out of range: this machine has 2 CUDA device(s), " \
                                                   "cuda:0 to cuda:1"
    assert study.absent_device_reason("auto") is None and study.absent_device_reason("cpu") is None
