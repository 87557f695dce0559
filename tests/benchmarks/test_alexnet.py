"""AlexNet under pytest-benchmark: each layer and the whole network, forward and train_step (cases: conftest.py).

Test ids read DEVICE-BACKEND-LAYER-PASS, e.g. `test_alexnet[cpu-torch-conv2-forward]`; the committed baselines are
keyed by them.
"""


def test_alexnet(benchmark, prepared):
    benchmark.extra_info.update(prepared.info)
    prepared.warmup()
    before = prepared.calibrate()
    benchmark(prepared.timed)
    after = prepared.calibrate()
    # The calibration is timed right before and right after the case; the faster of the two is kept, like the
    # case's own statistic (its fastest round).
    benchmark.extra_info.update({key: min(before[key], after[key]) for key in before})
