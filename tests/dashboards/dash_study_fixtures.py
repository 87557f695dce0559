"""FABRICATED rows and summaries of the ingredients, augmentation and multigpu studies, for the dashboard layout tests.
Not measurements: nothing here is a result.

The rows come from dash_fixtures' toy cost model; the summaries are computed from them by the studies' own summary
functions (so the dashboard reads exactly what the studies store). Each study has one case that was not measured, with
a fabricated reason, so the tests can check that a missing value is never drawn as 0:
- ingredients: triton backward of the network without LRN (status error) -> that LRN share is None;
- augmentation: the Triton kernel writing bfloat16 channels_last (status skipped);
- multigpu: DDP over 8 ranks (skipped), and DDP over 2 ranks at a global batch with no one-process row to compare
  with -> its speedup is None.
"""
from __future__ import annotations

import json

from perfkit.results.store import load_measurements

NOT_MEASURED_NOTE = "fabricated: this case was not measured"
INGREDIENT_MISSING = ("triton", "backward", "lrn")  # backend, pass, ingredient whose share is None
#: Fabricated images/s per (device, threads) on the CPU and (device, backend) on the GPU.
AUGMENT_RATES = {("cpu", 1): 900.0, ("cpu", 16): 7_000.0, ("cuda:0", "triton"): 400_000.0,
                 ("cuda:0", "torch"): 60_000.0}


def add_study_rows(w, runs: list[str]) -> None:
    """Rows and summaries of the three studies, written through dash_fixtures' writer `w`; run ids appended to
    `runs`."""
    runs += [_ingredients(w), _augmentation(w), _multigpu(w)]


def _rows(w, run_id):
    df = load_measurements(w.store.path)
    return df[df.run_id == run_id]


def _ingredients(w) -> str:
    from perfkit.studies.ingredients import INGREDIENTS, ablated, ingredient_table

    run = w.run("ingredients")
    for variant in ["alexnet2012"] + [ablated("alexnet2012", i) for i in INGREDIENTS]:
        for backend in ("torch", "triton"):
            for p in ("forward", "backward", "train_step"):
                row = w.row(run, "ingredients", variant=variant, pass_name=p, backend=backend)
                if (backend, p) == INGREDIENT_MISSING[:2] and variant == ablated("alexnet2012", "lrn"):
                    row.update(status="error", time_median_s=None, images_per_s=None,
                               torch_peak_allocated_bytes=None, note=NOT_MEASURED_NOTE)
                w.add(row)
    w.store.add_summary(run, "ingredients", "fabricated summary",
                        {"variant": "alexnet2012", "rows": ingredient_table(_rows(w, run), "alexnet2012"),
                         "fabricated": True})
    return run


def _augment_row(w, run, device, backend, threads=None, layout="nchw", dtype="float32"):
    row = w.row(run, "augmentation", device=device, backend=backend, threads=threads, dtype="float32",
                options={"input": "uint8", "layout": layout})
    rate = AUGMENT_RATES[(device, threads if device == "cpu" else backend)]
    row.update(layer="augment", layer_kind="augment", dtype=dtype, time_median_s=128 / rate, images_per_s=rate,
               time_p10_s=None, time_p90_s=None, flops=None, achieved_flops_per_s=None,
               arithmetic_intensity_flops_per_byte=None)
    return row


def _augmentation(w) -> str:
    from perfkit.studies.augmentation import augment_rows, train_rows, verdict

    run = w.run("augmentation")
    for threads in (1, 16):
        w.add(_augment_row(w, run, "cpu", "torch", threads))
    w.add(_augment_row(w, run, "cuda:0", "triton"))
    w.add(_augment_row(w, run, "cuda:0", "torch"))
    w.add(dict(_augment_row(w, run, "cuda:0", "triton", layout="channels_last", dtype="bfloat16"), status="skipped",
               time_median_s=None, images_per_s=None, note=NOT_MEASURED_NOTE))
    w.add(w.row(run, "augmentation", pass_name="train_step"))
    w.add(w.row(run, "augmentation", pass_name="train_step", dtype="bfloat16", options={"autocast": True}))
    df = _rows(w, run)
    aug, train = augment_rows(df), train_rows(df)
    w.store.add_summary(run, "augmentation", "fabricated summary",
                        {"augment": aug, "train": train, "verdict": verdict(aug, train), "fabricated": True})
    return run


def _multigpu(w) -> str:
    from perfkit.studies.multigpu import communication, table

    run = w.run("multigpu")
    forms = [("single", 1, 128), ("two_column", 2, 128), ("ddp", 1, 128), ("ddp", 2, 256), ("ddp", 4, 512),
             ("ddp", 2, 64)]
    for parallel, world, batch in forms + [("ddp", 8, 1024)]:
        row = w.row(run, "multigpu", pass_name="train_step", batch=batch,
                    options={"dist_backend": "nccl", "parallel": parallel, "world_size": world})
        step = row["time_median_s"] / world ** 0.9 if parallel == "ddp" else row["time_median_s"]
        row.update(time_median_s=step, images_per_s=batch / step)
        if world == 8:
            row.update(status="skipped", time_median_s=None, images_per_s=None, note=NOT_MEASURED_NOTE)
        w.add(row)
    w.store.add_summary(run, "multigpu", "fabricated summary",
                        {"rows": table(_rows(w, run)), "communication": communication("alexnet2012", 128),
                         "fabricated": True})
    return run


def summary_json(path, study: str) -> dict:
    """The data JSON of the (one) summary of `study` in the store at `path`."""
    import sqlite3

    con = sqlite3.connect(path)
    try:
        return json.loads(con.execute("SELECT data FROM summaries WHERE study=?", (study,)).fetchone()[0])
    finally:
        con.close()
