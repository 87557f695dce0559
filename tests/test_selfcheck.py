"""`perfkit selfcheck timer`: perfkit's CPU timer against torch.utils.benchmark on the same call, side by side."""
import time

import pytest
import torch

from perfkit.app.cli import main
from perfkit.app.selfcheck import compare_timers, format_comparisons, timer_selfcheck


def test_both_timers_report_seconds_per_call_of_a_call_of_known_length():
    """A call that sleeps 4 ms: both medians are about 4 ms (not ms vs s, not per block), so the ratio is near 1."""
    result = compare_timers(lambda: time.sleep(0.004), "cpu", threads=1, rounds=2, min_time_s=0.1, tolerance=0.25)
    assert 0.004 <= result.perfkit_median_s < 0.008 and 0.004 <= result.other_median_s < 0.008
    assert result.ratio == pytest.approx(result.perfkit_median_s / result.other_median_s)
    assert result.ratio_low <= result.ratio_high and result.rounds == 2
    assert result.agrees and result.other_timer == "torch.utils.benchmark.Timer.blocked_autorange"


def test_a_timer_that_disagrees_is_reported_as_such():
    """torch's figure halved behind the check's back: the ratio is about 2 and the case is marked as differing."""
    import perfkit.app.selfcheck as selfcheck

    def run():
        time.sleep(0.002)

    real = selfcheck._torch_benchmark_median
    try:
        selfcheck._torch_benchmark_median = lambda run, threads, min_time_s: real(run, threads, min_time_s) / 2
        result = compare_timers(run, "cpu", threads=1, rounds=1, min_time_s=0.05, tolerance=0.05)
    finally:
        selfcheck._torch_benchmark_median = real
    assert result.ratio == pytest.approx(2.0, rel=0.3) and not result.agrees
    assert "differs" in format_comparisons([result], 0.05, "perfkit selfcheck timer")


def test_selfcheck_times_the_runners_own_call_for_each_case():
    [result] = timer_selfcheck(batch=1, threads=1, rounds=1, min_time_s=0.05, tolerance=1.0,
                               cases=(("fc8", "forward"),), show_progress=False)
    assert (result.layer, result.pass_name, result.batch, result.threads) == ("fc8", "forward", 1, 1)
    assert result.perfkit_median_s > 0 and result.other_median_s > 0


@pytest.mark.parametrize("args,message", [
    (["selfcheck"], "the following arguments are required"),
    (["selfcheck", "clock"], "invalid choice: 'clock'"),
    (["selfcheck", "timer", "--rounds", "0"], "0 is not a positive number"),
    (["selfcheck", "timer", "--device", "tpu"], "invalid device 'tpu'"),
])
def test_bad_selfcheck_arguments_exit_2_with_a_hint(args, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "--help" in err


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_a_gpu_cuda_events_and_do_bench_agree_on_a_matmul():
    pytest.importorskip("triton")
    a = torch.randn(4096, 4096, device="cuda")
    result = compare_timers(lambda: a @ a, "cuda:0", rounds=2, min_time_s=0.2, tolerance=0.1)
    assert result.other_timer == "triton.testing.do_bench" and result.threads is None
    assert 0.8 < result.ratio < 1.25, result
