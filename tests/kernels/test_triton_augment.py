"""The fused augmentation kernel against the float64 torch reference of perfkit.workloads.augment, with the same random draws:
odd image and crop shapes, uint8 and float inputs in NCHW and HWC (channels_last) layouts, NCHW and channels_last
outputs, every flip and the extreme crop corners."""
import pytest
import torch

import perfkit.kernels as K
from perfkit.workloads import augment as A
from triton_kernel_helpers import rel_err

FORMATS = [pytest.param(False, id="nchw"), pytest.param(True, id="channels_last")]


def _lighting():
    """Lighting statistics of a few random images (the kernel tests do not need the photographs)."""
    images = [torch.randint(0, 256, (3, 17, 19), dtype=torch.uint8) for _ in range(2)]
    images.append((torch.rand(3, 11, 13) * 80).to(torch.uint8))  # a darker image, so the channels correlate
    return A.lighting_from(images, "test images")


LIGHTING = _lighting()


def _images(n, h, w, dtype, hwc, device):
    x = torch.randint(0, 256, (n, h, w, 3), dtype=torch.uint8).permute(0, 3, 1, 2)  # HWC memory, NCHW shape
    if not hwc:
        x = x.contiguous()
    if dtype != torch.uint8:
        x = x.to(dtype) / 255.0  # keeps the memory format
    return x.to(device)


def _augment(x, d, size, **kw):
    color, mean, std = (t.to(x.device, torch.float32) for t in (LIGHTING.color, LIGHTING.mean, LIGHTING.std))
    return K.augment(x, d.top, d.left, d.flip, d.alpha, color, mean, std, size=size, **kw)


def _draws(n, hw, size, device, seed=0):
    return A.draw(n, hw, size, torch.Generator(device=device).manual_seed(seed), device)


@pytest.mark.parametrize("out_channels_last", FORMATS)
@pytest.mark.parametrize("hwc", [pytest.param(True, id="hwc-input"), pytest.param(False, id="nchw-input")])
@pytest.mark.parametrize("in_dtype", [torch.uint8, torch.float32], ids=["uint8", "float32"])
def test_matches_the_reference_on_odd_shapes(in_dtype, hwc, out_channels_last, device):
    n, h, w, size = 5, 37, 45, (29, 31)
    x = _images(n, h, w, in_dtype, hwc, device)
    d = _draws(n, (h, w), size, device)
    y = _augment(x, d, size, channels_last=out_channels_last)
    assert y.shape == (n, 3, 29, 31) and y.dtype == torch.float32 and y.device == x.device
    fmt = torch.channels_last if out_channels_last else torch.contiguous_format
    assert y.is_contiguous(memory_format=fmt)
    want = A.reference(x, d, LIGHTING, size)
    assert rel_err(y, want) < 1e-6
    # the check has teeth: the lighting shift alone moves the output by far more than the tolerance
    no_light = A.reference(x, A.Draws(d.top, d.left, d.flip, torch.zeros_like(d.alpha)), LIGHTING, size)
    assert rel_err(no_light, want) > 1e-3


def test_every_flip_and_the_extreme_corners(device):
    n, h, w, size = 4, 23, 30, 16
    x = _images(n, h, w, torch.uint8, True, device)
    d = A.Draws(top=torch.tensor([0, 0, h - size, h - size], dtype=torch.int32, device=device),
                left=torch.tensor([0, w - size, 0, w - size], dtype=torch.int32, device=device),
                flip=torch.tensor([0, 1, 1, 0], dtype=torch.int32, device=device),
                alpha=torch.randn(n, 3, device=device) * A.ALPHA_STD)
    y = _augment(x, d, size)
    assert rel_err(y, A.reference(x, d, LIGHTING, size)) < 1e-6
    # a mirrored image is the unmirrored one read backwards
    unflipped = _augment(x, A.Draws(d.top, d.left, torch.zeros_like(d.flip), d.alpha), size)
    assert torch.equal(y[1], unflipped[1].flip(-1)) and torch.equal(y[0], unflipped[0])


def test_flip_accepts_bools_and_int64_corners(device):
    n, h, w, size = 3, 19, 21, 9
    x = _images(n, h, w, torch.uint8, True, device)
    d = _draws(n, (h, w), size, device, seed=3)
    as_bool = A.Draws(d.top.long(), d.left.long(), d.flip.bool(), d.alpha.double())
    assert torch.equal(_augment(x, as_bool, size), _augment(x, d, size))


@pytest.mark.parametrize("out_dtype", [torch.float16, torch.float32], ids=["float16", "float32"])
def test_half_input_and_output(out_dtype, device):
    n, h, w, size = 3, 21, 27, (13, 17)
    x = _images(n, h, w, torch.float16, False, device)
    d = _draws(n, (h, w), size, device, seed=1)
    y = _augment(x, d, size, out_dtype=out_dtype)
    assert y.dtype == out_dtype
    assert rel_err(y, A.reference(x, d, LIGHTING, size)) < (1e-3 if out_dtype == torch.float16 else 1e-6)


def test_input_scale_multiplies_raw_pixels(device):
    x = _images(2, 12, 12, torch.uint8, True, device)
    d = _draws(2, (12, 12), 8, device)
    y = _augment(x, d, 8, input_scale=1.0)
    assert rel_err(y, A.reference(x, d, LIGHTING, 8, input_scale=1.0)) < 1e-6


def test_the_kernel_and_the_torch_operators_agree_on_the_photographs(device):
    if A.missing_packages():
        pytest.skip(A.missing_packages())
    x = A.photo_batch(1, seed=0).to(device)  # one 256x256 image: the interpreter is slow
    d = _draws(1, (A.SOURCE_SIZE, A.SOURCE_SIZE), A.CROP, device)
    lighting = A.photo_lighting()
    got = A.augment_triton(x, d, lighting)
    assert got.shape == (1, 3, A.CROP, A.CROP)
    assert rel_err(got, A.augment_torch(x, d, lighting)) < 1e-6
    assert rel_err(got, A.reference(x, d, lighting)) < 1e-6


def test_empty_batch(device):
    x = _images(0, 10, 10, torch.uint8, True, device)
    d = _draws(0, (10, 10), 8, device)
    assert _augment(x, d, 8).shape == (0, 3, 8, 8)


def test_arguments_are_checked_before_launch(device):
    x = _images(2, 12, 12, torch.uint8, True, device)
    d = _draws(2, (12, 12), 8, device)
    with pytest.raises(ValueError, match="RGB"):
        _augment(x[:, :2], d, 8)
    with pytest.raises(TypeError, match="dtype"):
        _augment(x.to(torch.int32), d, 8)
    with pytest.raises(ValueError, match="larger than the images"):
        _augment(x, d, 13)
    with pytest.raises(ValueError, match="must have 2 elements"):
        _augment(x, A.Draws(d.top[:1], d.left, d.flip, d.alpha), 8)
    with pytest.raises(ValueError, match="must have 6 elements"):
        _augment(x, A.Draws(d.top, d.left, d.flip, d.alpha[:, :2]), 8)
    with pytest.raises(TypeError, match="integers"):
        _augment(x, A.Draws(d.top.float(), d.left, d.flip, d.alpha), 8)
    with pytest.raises(TypeError, match="out_dtype"):
        _augment(x, d, 8, out_dtype=torch.int32)
    with pytest.raises(TypeError, match="channels_last"):
        _augment(x, d, 8, channels_last=1)
    with pytest.raises(TypeError, match="torch.Tensor"):
        _augment(x.numpy() if x.device.type == "cpu" else x.cpu().numpy(), d, 8)
