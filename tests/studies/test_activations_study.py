"""The activations study: CIFAR-10's python batches are read (and nothing else is), training runs store their curves,
and the summary's ReLU/tanh ratio comes from measured curves only, next to the paper's six."""
import json
import pickle

import numpy as np
import pandas as pd
import pytest

from study_helpers import frame, measured, run_quick  # noqa: F401 (run_quick is a fixture)

from perfkit.cases import NETWORK, Case
from perfkit.app.cli import main
from perfkit.workloads.datasets import CIFAR10, DIGITS, DatasetError, load_cifar10, read_cifar10_batch
from perfkit.app.published import figure
from perfkit.results.store import load_training_curves
from perfkit.study import StudyOptions
from perfkit.studies import activations
from perfkit.workloads.training import TRAINING_PASS

pytest.importorskip("sklearn")  # the digits ship with scikit-learn (the test extra)


def write_cifar10_batch(path, n, seed):
    """A file in CIFAR-10's python format: a pickled dict with b"data" uint8 (n, 3072), red then green then blue
    planes of a 32x32 image, row-major, and b"labels" a list of ints 0-9."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    # A learnable signal: the label sets the mean of the red plane.
    data[:, :1024] = (labels[:, None] * 25 + rng.integers(0, 6, (n, 1024))).astype(np.uint8)
    with open(path, "wb") as f:
        pickle.dump({b"batch_label": b"testing batch", b"labels": labels.tolist(), b"data": data,
                     b"filenames": [b"x.png"] * n}, f)
    return data, labels


def test_cifar10_batches_are_read_in_their_layout(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    data, labels = write_cifar10_batch(folder / "data_batch_1", 20, 0)
    write_cifar10_batch(folder / "data_batch_2", 10, 1)
    images, got_labels = read_cifar10_batch(folder / "data_batch_1")
    assert images.shape == (20, 3, 32, 32) and images.dtype.is_floating_point is False
    # pixel (row 1, column 2) of image 3: red at 32 + 2, green 1024 further, blue 2048 further
    assert [int(images[3, c, 1, 2]) for c in range(3)] == [int(data[3, 34 + 1024 * c]) for c in range(3)]
    assert got_labels.tolist() == labels.tolist()
    whole = load_cifar10(tmp_path)  # the parent folder works too
    assert len(whole) == 30 and whole.name == CIFAR10 and whole.images.shape[1:] == (3, 32, 32)
    assert abs(float(whole.images.mean())) < 1e-4  # standardised
    assert len(load_cifar10(folder, batches=1)) == 20


class _Evil:
    def __reduce__(self):
        return (print, ("this must not run",))


def test_a_pickle_that_is_not_a_batch_is_refused_without_running_it(tmp_path, capsys):
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps({b"data": _Evil(), b"labels": []}))
    with pytest.raises(DatasetError, match="refusing to load builtins.print"):
        read_cifar10_batch(tmp_path / "data_batch_1")
    assert "must not run" not in capsys.readouterr().out
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(DatasetError, match=r"shape \(N, 3072\)"):
        read_cifar10_batch(tmp_path / "data_batch_1")
    with pytest.raises(DatasetError, match="is not a directory"):
        load_cifar10(tmp_path / "missing")
    (tmp_path / "data_batch_1").unlink()
    with pytest.raises(DatasetError, match="no training batches"):
        load_cifar10(tmp_path)


def test_cli_rejects_a_folder_without_cifar10_batches(tmp_path, capsys):
    assert main(["study", "activations", "--cifar10", str(tmp_path), "--store", str(tmp_path / "s.db")]) == 2
    err = capsys.readouterr().err
    assert "no training batches" in err and "--help" in err
    assert not (tmp_path / "s.db").exists()  # nothing was started
    assert main(["study", "backends", "--cifar10", str(tmp_path)]) == 2
    assert "an option of the activations study" in capsys.readouterr().err


def test_training_on_cifar10_files_stores_rows_and_curves_naming_the_data(tmp_path, run_quick):
    write_cifar10_batch(tmp_path / "data_batch_1", 256, 0)
    result, df, summaries = run_quick("activations", kernels=False, lrs=[0.05], epochs=2, cifar10=str(tmp_path))
    training = df[(df.pass_name == TRAINING_PASS) & (df.device == "cpu")]  # the GPU's are planned, and skipped here
    assert sorted(training.activation) == ["relu", "sigmoid", "tanh"]
    assert (training.status == "ok").all(), training.note.tolist()
    assert all(json.loads(o)["dataset"] == CIFAR10 for o in training.options)
    assert training.note.str.contains("CIFAR-10 training set").all()
    assert (training.error_rel < 1e-4).all()  # each run's train_step was checked first
    curves = load_training_curves(df.store.iloc[0])
    mine = curves[curves.case_key.isin(training.case_key)]
    # 256 images at batch 128: 2 steps per epoch, a point after each (evals_per_epoch 4 caps at the steps)
    assert mine.groupby("case_key").size().tolist() == [4, 4, 4]
    assert mine.epoch.max() == 2 and (mine.train_error.between(0, 1)).all() and (mine.wall_s > 0).all()
    data = summaries[summaries.run_id == result.run_id].data.iloc[0]
    assert {c["dataset"] for c in data["curves"]} == {CIFAR10}
    assert "cifar10 (CIFAR-10 training set" in result.summary.text


def test_quick_run_on_digits_names_the_data_set_and_reports_from_its_curves(run_quick):
    result, df, _ = run_quick("activations", kernels=False, lrs=[0.03, 0.1], epochs=2, train_images=512)
    training = df[(df.pass_name == TRAINING_PASS) & (df.device == "cpu")]
    assert len(training) == 6 and (training.status == "ok").all()
    assert all(json.loads(o)["dataset"] == DIGITS for o in training.options)
    [group] = result.summary.data["convergence"]
    assert group["dataset"] == DIGITS
    for activation, entry in group["activations"].items():
        assert [r["lr"] for r in entry["runs"]] == [0.03, 0.1]
        # the reported epochs are those of a measured point of that activation's best run
        if entry["epochs_to_target"] is not None:
            assert entry["epochs_to_target"] in [p["epoch"] for p in entry["points"]]
    assert "On digits, not CIFAR-10" in result.summary.text


# -- the summary's ratio, from chosen curves --------------------------------------------------------------------------
def _training_row(activation, lr, key):
    case = Case(variant="cifar4", layer=NETWORK, backend="torch", device="cpu", dtype="float32", batch=128,
                pass_name=TRAINING_PASS, activation=activation,
                options=(("dataset", "cifar10"), ("epochs", 8), ("lr", lr)))
    row = measured(case, status="skipped")  # then made an ok training row, which has no repeated timing
    row.update(case_key=key, time_median_s=None, error_rel=1e-6, options=json.dumps({"dataset": "cifar10", "epochs": 8, "lr": lr}), layer_kind="network",
               status="ok", note="CIFAR-10 training set (test); lr", images_per_s=1000.0)
    return row


def _curve(key, errors, seconds_per_epoch=2.0):
    return [{"run_id": "run", "case_key": key, "point_index": i, "epoch": (i + 1) / 2, "step": i + 1, "images": 0,
             "train_error": e, "running_error": None, "loss": None, "wall_s": (i + 1) / 2 * seconds_per_epoch,
             "eval_s": 0.1, "eval_images": 100} for i, e in enumerate(errors)]


def test_summary_reports_the_measured_relu_tanh_ratio_next_to_the_papers_six():
    df = frame([_training_row("relu", 0.01, "r1"), _training_row("relu", 0.1, "r2"),
                _training_row("tanh", 0.01, "t1"), _training_row("tanh", 0.1, "t2")])
    curves = pd.DataFrame(
        _curve("r1", [0.9, 0.5, 0.3, 0.2]) +  # 25% at epoch 2
        _curve("r2", [0.8, 0.2, 0.1, 0.1]) +  # 25% at epoch 1: ReLU's best
        _curve("t1", [0.9, 0.8, 0.6, 0.5, 0.4, 0.3, 0.24]) +  # epoch 3.5
        _curve("t2", [0.9, 0.7, 0.5, 0.4, 0.3, 0.26, 0.25], seconds_per_epoch=3.0))  # epoch 3.5, slower
    summary = activations.summarize(df, StudyOptions(devices=("cpu",), quick=True), curves=curves)
    [group] = summary.data["convergence"]
    assert group["activations"]["relu"]["best_lr"] == 0.1
    assert group["activations"]["tanh"]["best_lr"] == 0.01  # same epochs, less time
    assert group["relu_speedup_over_tanh_epochs"] == pytest.approx(3.5)
    assert group["relu_speedup_over_tanh_wall"] == pytest.approx(7.0 / 2.0)
    paper = figure("paper_relu_vs_tanh_speedup").value
    assert paper == 6
    assert "3.5x faster than tanh in epochs (3.5 / 1)" in summary.text and f"the paper: {paper:g}x" in summary.text


def test_no_ratio_is_invented_when_tanh_never_reaches_the_target():
    df = frame([_training_row("relu", 0.1, "r"), _training_row("tanh", 0.1, "t")])
    curves = pd.DataFrame(_curve("r", [0.5, 0.2]) + _curve("t", [0.9, 0.8, 0.7, 0.6]))
    summary = activations.summarize(df, StudyOptions(devices=("cpu",), quick=True), curves=curves)
    [group] = summary.data["convergence"]
    assert "relu_speedup_over_tanh_epochs" not in group
    assert group["relu_speedup_over_tanh_epochs_lower_bound"] == pytest.approx(2.0)  # tanh's 2 epochs / ReLU's 1
    assert "tanh did not reach 25% within 2 epochs" in summary.text and "at least 2x" in summary.text
    # and with no curve at all, nothing
    empty = activations.summarize(df.iloc[0:0], StudyOptions(devices=("cpu",), quick=True), curves=None)
    assert empty.data["convergence"] == [] and "no convergence result" in empty.text
