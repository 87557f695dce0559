"""AlexNet's training augmentation in one kernel: random crop, horizontal flip, PCA lighting noise and normalisation.

For image n, channel c and output pixel (oh, ow) of a (size_h, size_w) crop:

    iw  = left[n] + (size_w - 1 - ow if flip[n] else ow)          # the crop, mirrored when flip[n] is set
    v   = x[n, c, top[n] + oh, iw] * input_scale                  # e.g. 1/255 for uint8 pixels
    y   = (v + sum_i alpha[n, i] * color[c, i] - mean[c]) / std[c]

where color[c, i] = lambda_i * p_i[c] holds the eigenvalues lambda_i and eigenvectors p_i of the RGB pixel covariance
(the paper's lighting noise adds sum_i alpha_i lambda_i p_i to every pixel of an image, alpha_i ~ N(0, 0.1) drawn once
per image). The per-image random draws (crop corner, flip flag, alphas) come from the host; the kernel reads them.

A program owns BLOCK output pixels of one image and writes all three channels: it gathers each pixel once per channel
from the input (only the crop is read, never the whole 256x256 image), folds the lighting shift, mean and standard
deviation into one multiply-add per element, and stores in the output's dtype and layout. Input and output strides are
free, so uint8 HWC images (channels_last) and float NCHW batches are read as they are, and the output may be NCHW or
channels_last. Memory-bound: one read of the crop and one write of the output.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _common

INPUT_DTYPES = (torch.uint8, torch.float32, torch.float16, torch.bfloat16)
OUTPUT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_INDEX_DTYPES = (torch.int32, torch.int64, torch.int16, torch.int8, torch.uint8, torch.bool)


def augment_configs() -> list[triton.Config]:
    """Pixel blocks for the GPU sweep, or the one interpreter config."""
    gpu = [triton.Config({"BLOCK": b}, num_warps=w) for b, w in ((256, 2), (512, 4), (1024, 4), (1024, 8), (2048, 8))]
    return _common.select_configs(gpu, triton.Config({"BLOCK": 1024}, num_warps=4))


@_common.tuned(configs=augment_configs(), key=["OH", "OW", "sxc", "syc"])
@triton.jit
def _augment_kernel(
    x_ptr, y_ptr, top_ptr, left_ptr, flip_ptr, alpha_ptr, color_ptr, mean_ptr, std_ptr,
    H, W, OH, OW,
    sxn, sxc, sxh, sxw, syn, syc, syh, syw,
    input_scale,
    BLOCK: tl.constexpr,
):
    # One flat grid over (pixel block, image), pixel blocks fastest: no 65535 limit on the batch.
    pid = tl.program_id(0)
    num_q = tl.cdiv(OH * OW, BLOCK)
    n = pid // num_q
    offs = (pid % num_q) * BLOCK + tl.arange(0, BLOCK)
    oh = offs // OW
    ow = offs % OW

    # This image's draws: where the crop starts, whether it is mirrored, and its lighting coefficients.
    top = tl.load(top_ptr + n)
    left = tl.load(left_ptr + n)
    flip = tl.load(flip_ptr + n)
    a0 = tl.load(alpha_ptr + 3 * n)
    a1 = tl.load(alpha_ptr + 3 * n + 1)
    a2 = tl.load(alpha_ptr + 3 * n + 2)

    ih = top + oh
    iw = left + tl.where(flip != 0, OW - 1 - ow, ow)
    # A corner outside the image (the host does not check values on the device) reads zeros, never stray memory.
    in_crop = offs < OH * OW
    ok = in_crop & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
    src = x_ptr + n.to(tl.int64) * sxn + ih * sxh + iw * sxw
    dst = y_ptr + n.to(tl.int64) * syn + oh * syh + ow * syw
    for c in tl.static_range(3):
        # the lighting shift of this channel: sum_i alpha_i * lambda_i * p_i[c]
        shift = (a0 * tl.load(color_ptr + 3 * c) + a1 * tl.load(color_ptr + 3 * c + 1)
                 + a2 * tl.load(color_ptr + 3 * c + 2))
        inv_std = 1.0 / tl.load(std_ptr + c)
        # (v * input_scale + shift - mean) / std as one multiply-add per element
        scale = input_scale * inv_std
        bias = (shift - tl.load(mean_ptr + c)) * inv_std
        v = tl.load(src + c * sxc, mask=ok, other=0)
        y = v.to(tl.float32) * scale + bias
        tl.store(dst + c * syc, y.to(y_ptr.dtype.element_ty), mask=in_crop)


def _check_vector(name: str, t, length: int, ref: torch.Tensor, integer: bool) -> torch.Tensor:
    """A 1-D (or (N, 3) for alpha) tensor on the input's device, returned as contiguous int32 or float32."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if integer and t.dtype not in _INDEX_DTYPES:
        raise TypeError(f"{name} must hold integers (or bools), got dtype {t.dtype}")
    if not integer and not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    if t.numel() != length:
        raise ValueError(f"{name} must have {length} elements, got shape {tuple(t.shape)}")
    if t.device != ref.device:
        raise ValueError(f"{name} is on {t.device} but input is on {ref.device}; they must be on one device")
    return t.reshape(-1).to(torch.int32 if integer else torch.float32).contiguous()


def augment(
    input: torch.Tensor,
    top: torch.Tensor,
    left: torch.Tensor,
    flip: torch.Tensor,
    alpha: torch.Tensor,
    color: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    size=224,
    out_dtype: torch.dtype = torch.float32,
    channels_last: bool = False,
    input_scale: float | None = None,
) -> torch.Tensor:
    """AlexNet's augmentation of a batch: crop, mirror, PCA lighting noise, normalisation (see the module docstring).

    input: (N, 3, H, W) uint8, float32, float16 or bfloat16, any strides (uint8 HWC images are a channels_last view).
    top, left: (N,) integer crop corners, in [0, H - size_h] and [0, W - size_w] (not checked: reading the values on
    the device would synchronise; loads outside the image are masked and read as zeros). flip: (N,) integers or bools,
    non-zero mirrors the crop horizontally. alpha: (N, 3) lighting coefficients (N(0, 0.1) in the paper).
    color: (3, 3) with color[c, i] = lambda_i * p_i[c]. mean, std: (3,) per-channel statistics in input_scale units.
    All on the input's device (the small ones are converted to float32/int32 there when they are not already).
    size: int or (size_h, size_w), at most the image. input_scale: multiplies raw pixel values; None means 1/255 for
    uint8 input and 1 otherwise. Returns (N, 3, size_h, size_w) in out_dtype (float32, float16 or bfloat16), NCHW or,
    with channels_last, in channels_last memory format; computed in float32 and rounded once.
    """
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"input must be a torch.Tensor, got {type(input).__name__}")
    if input.dtype not in INPUT_DTYPES:
        raise TypeError(f"input has dtype {input.dtype}; augment reads uint8, float32, float16 or bfloat16 images")
    if input.dim() != 4 or input.shape[1] != 3:
        raise ValueError(f"input must be (N, 3, H, W) RGB images, got shape {tuple(input.shape)}")
    _common.check_device("input", input)
    if out_dtype not in OUTPUT_DTYPES:
        raise TypeError(f"out_dtype must be torch.float32, torch.float16 or torch.bfloat16, got {out_dtype}")
    if not isinstance(channels_last, bool):
        raise TypeError(f"channels_last must be a bool, got {type(channels_last).__name__}")
    n_batch, _, h, w = input.shape
    oh, ow = _common.check_pair("size", size, minimum=1)
    if oh > h or ow > w:
        raise ValueError(f"size {(oh, ow)} is larger than the images ({h}x{w})")
    if input_scale is None:
        input_scale = 1.0 / 255.0 if input.dtype == torch.uint8 else 1.0
    input_scale = _common.check_float("input_scale", input_scale)
    top = _check_vector("top", top, n_batch, input, integer=True)
    left = _check_vector("left", left, n_batch, input, integer=True)
    flip = _check_vector("flip", flip, n_batch, input, integer=True)
    alpha = _check_vector("alpha", alpha, 3 * n_batch, input, integer=False)
    color = _check_vector("color", color, 9, input, integer=False)
    mean = _check_vector("mean", mean, 3, input, integer=False)
    std = _check_vector("std", std, 3, input, integer=False)
    _common.check_int32_extent("one input image", input[0].numel() if n_batch else 0)

    fmt = torch.channels_last if channels_last else torch.contiguous_format
    y = torch.empty((n_batch, 3, oh, ow), dtype=out_dtype, device=input.device, memory_format=fmt)
    if y.numel() == 0:
        return y

    def grid(meta):
        return (triton.cdiv(oh * ow, meta["BLOCK"]) * n_batch,)

    _augment_kernel[grid](
        input, y, top, left, flip, alpha, color, mean, std,
        h, w, oh, ow, *input.stride(), *y.stride(), input_scale,
    )
    return y
