"""The ingredients study: an ingredient's cost is the full network's time less the ablated network's, from measured
rows only; the ablated networks share the full network's parameters."""
import pytest

from study_helpers import frame, measured

from perfkit.cases import NETWORK, Case
from perfkit.study import StudyOptions
from perfkit.studies import ingredients


def _row(variant, layer, seconds, device="cpu", status="ok"):
    case = Case(variant=variant, layer=layer, backend="torch", device=device, dtype="float32", batch=4,
                pass_name="forward")
    return measured(case, status=status, time_s=seconds, torch_peak_allocated_bytes=None)


def test_grid_plans_the_full_and_ablated_networks_and_the_ingredient_layers():
    cases = ingredients.cases(StudyOptions(devices=("cpu",), quick=True, extra={"passes": ["forward"]}))
    networks = {c.variant for c in cases if c.layer == NETWORK}
    assert networks == {"alexnet2012", "alexnet2012-nodropout", "alexnet2012-nolrn", "alexnet2012-pool2x2"}
    layers = {(c.variant, c.layer) for c in cases if c.layer != NETWORK}
    assert ("alexnet2012", "lrn1") in layers and ("alexnet2012", "drop7") in layers
    assert ("alexnet2012-pool2x2", "pool5") in layers  # the 2x2 pools that replace the overlapping ones
    # owt has no LRN: no nolrn network is planned for it
    owt = ingredients.cases(StudyOptions(devices=("cpu",), quick=True, variant="owt", extra={"passes": ["forward"]}))
    assert not any(c.variant.endswith("nolrn") for c in owt)


def test_cost_is_the_difference_of_measured_networks_and_missing_rows_give_none():
    rows = [_row("alexnet2012", NETWORK, 0.100), _row("alexnet2012-nolrn", NETWORK, 0.080),
            _row("alexnet2012-nodropout", NETWORK, 0.099),
            _row("alexnet2012-pool2x2", NETWORK, None, status="incorrect"),
            _row("alexnet2012", "lrn1", 0.012), _row("alexnet2012", "lrn2", 0.006)]
    table = {r["ingredient"]: r for r in ingredients.ingredient_table(frame(rows), "alexnet2012")}
    assert table["lrn"]["cost_s"] == pytest.approx(0.020) and table["lrn"]["share"] == pytest.approx(0.2)
    assert table["lrn"]["layers_s"] == pytest.approx(0.018)
    assert table["dropout"]["cost_s"] == pytest.approx(0.001)
    assert table["dropout"]["layers_s"] is None  # drop6 and drop7 were not measured: no partial sum
    assert table["pooling"]["cost_s"] is None  # the ablated network's row is not ok: nothing invented
    assert table["lrn"]["memory_bytes"] is None  # the CPU's RSS is not compared
    summary = ingredients.summarize(frame(rows), StudyOptions(devices=("cpu",), quick=True))
    assert "Memory is not compared on the CPU" in summary.text
    assert "+20.0%" in summary.text


def test_gpu_memory_is_the_allocator_peak_difference():
    rows = [_row("alexnet2012", NETWORK, 0.010, device="cuda:0"), _row("alexnet2012-nolrn", NETWORK, 0.009,
                                                                      device="cuda:0")]
    rows[0]["torch_peak_allocated_bytes"] = 1000e6
    rows[1]["torch_peak_allocated_bytes"] = 900e6
    [lrn] = [r for r in ingredients.ingredient_table(frame(rows), "alexnet2012") if r["ingredient"] == "lrn"]
    assert lrn["memory_bytes"] == pytest.approx(100e6) and lrn["memory_share"] == pytest.approx(0.1)
    assert lrn["memory_kind"] == "torch allocator peak"
