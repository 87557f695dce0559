"""TritonSGD against torch.optim.SGD: the same update step for step (momentum, weight decay, the first step's buffer),
in one launch per parameter group, device and dtype."""
import copy

import pytest
import torch

from perfkit.kernels import TritonSGD
from triton_kernel_helpers import FP16, FP32, ON_GPU, randn

# AlexNet-like tensors: a channels_last conv filter, biases, a linear weight, one tensor over several programs' chunks
# (70,000 > 65,536 elements), and a 3-element tail.
SHAPES = [(96, 3, 11, 11), (96,), (37, 5), (70_000,), (3,)]
PAPER = dict(lr=0.01, momentum=0.9, weight_decay=5e-4)


def _pair(device, dtype=torch.float32):
    mine = [randn(*s, dtype=dtype, device=device, channels_last=len(s) == 4).requires_grad_() for s in SHAPES]
    theirs = [p.detach().clone().requires_grad_() for p in mine]
    return mine, theirs


def _set_grads(mine, theirs, step):
    gen = torch.Generator().manual_seed(step)
    for a, b in zip(mine, theirs):
        g = torch.randn(a.shape, generator=gen).to(a.device, a.dtype)
        a.grad = g.clone().contiguous(memory_format=torch.channels_last) if a.dim() == 4 else g.clone()
        b.grad = g.clone()


def _assert_same(mine, theirs, exact):
    for a, b in zip(mine, theirs):
        if exact:
            assert torch.equal(a, b), (a - b).abs().max()
        else:
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


# In float32 on the CPU both sides round the same operations the same way (fused multiply-adds where torch writes
# add(..., alpha=)): the parameters agree bit for bit. A GPU's torch (foreach kernels) may contract differently.
EXACT = not ON_GPU


@pytest.mark.parametrize("options", [
    PAPER,
    dict(PAPER, nesterov=True),
    dict(PAPER, dampening=0.1),
    dict(lr=0.05, momentum=0.0, weight_decay=5e-4),
    dict(lr=0.01, momentum=0.9, weight_decay=0.0, maximize=True),
], ids=["paper", "nesterov", "dampening", "no-momentum", "maximize-no-decay"])
def test_matches_torch_sgd_over_several_steps(options, device):
    mine, theirs = _pair(device)
    ours, reference = TritonSGD(mine, **options), torch.optim.SGD(theirs, **options)
    for step in range(4):
        _set_grads(mine, theirs, step)
        ours.step()
        reference.step()
        _assert_same(mine, theirs, EXACT)
        if options.get("momentum"):
            for a, b in zip(mine, theirs):
                _assert_same([ours.state[a]["momentum_buffer"]], [reference.state[b]["momentum_buffer"]], EXACT)
    assert ours.launches == 4  # one launch per step for all five tensors


def test_first_step_starts_the_buffer_at_grad_plus_decay(device):
    (p,) = [randn(10, device=device).requires_grad_()]
    start = p.detach().clone()
    opt = TritonSGD([p], **PAPER)
    p.grad = randn(10, device=device)
    opt.step()
    d = p.grad + 5e-4 * start
    torch.testing.assert_close(opt.state[p]["momentum_buffer"], d, rtol=1e-6, atol=0)
    torch.testing.assert_close(p.detach(), start - 0.01 * d, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("dtype", [FP32, FP16])
def test_16_bit_parameters(dtype, device):
    # float16 is updated in float32 and rounded once (torch rounds after each operation): within a few ulps.
    mine, theirs = _pair(device, dtype)
    ours, reference = TritonSGD(mine, **PAPER), torch.optim.SGD(theirs, **PAPER)
    for step in range(3):
        _set_grads(mine, theirs, step)
        ours.step()
        reference.step()
    for a, b in zip(mine, theirs):
        assert a.dtype == dtype and ours.state[a]["momentum_buffer"].dtype == dtype
        if dtype == torch.float16:  # a few float16 ulps (2**-10 relative)
            torch.testing.assert_close(a, b, rtol=2e-3, atol=1e-3)
        else:
            _assert_same([a], [b], EXACT)


def test_groups_missing_grads_and_state_dict(device):
    mine, theirs = _pair(device)
    groups = lambda ps: [{"params": ps[:2]}, {"params": ps[2:], "lr": 0.1, "weight_decay": 0.0}]  # noqa: E731
    ours, reference = TritonSGD(groups(mine), **PAPER), torch.optim.SGD(groups(theirs), **PAPER)
    _set_grads(mine, theirs, 0)
    mine[3].grad = theirs[3].grad = None  # a parameter without a gradient is left alone and gets no state
    ours.step()
    reference.step()
    _assert_same(mine, theirs, EXACT)
    assert mine[3] not in ours.state
    assert ours.launches == 2  # one per group

    # torch's state dict loads into TritonSGD (and the run goes on identically). A copy: state_dict() hands out the
    # optimizer's own buffers, which the two would otherwise both update.
    ours.load_state_dict(copy.deepcopy(reference.state_dict()))
    _set_grads(mine, theirs, 1)
    ours.step()
    reference.step()
    _assert_same(mine, theirs, EXACT)


def test_zero_grad_and_closure(device):
    (p,) = [randn(5, device=device).requires_grad_()]
    opt = TritonSGD([p])
    loss = opt.step(lambda: (p * p).sum().backward() or torch.tensor(1.0))
    assert loss.item() == 1.0 and p.grad is not None
    opt.zero_grad()
    assert p.grad is None


def test_bad_arguments_raise_before_any_launch(device):
    with pytest.raises(TypeError, match="float64"):
        TritonSGD([torch.zeros(3, dtype=torch.float64, device=device, requires_grad=True)])
    with pytest.raises(ValueError, match="dense parameters"):
        TritonSGD([torch.zeros(4, 6, device=device)[:, ::2].requires_grad_()])
    with pytest.raises(ValueError, match="invalid lr"):
        TritonSGD([torch.zeros(3, device=device, requires_grad=True)], lr=-0.1)
    with pytest.raises(ValueError, match="Nesterov"):
        TritonSGD([torch.zeros(3, device=device, requires_grad=True)], momentum=0.0, nesterov=True)
    p = torch.zeros(3, device=device, requires_grad=True)
    opt = TritonSGD([p])
    p.grad = torch.zeros(3, device=device).to_sparse()
    with pytest.raises(RuntimeError, match="sparse gradients"):
        opt.step()
    assert opt.launches == 0
