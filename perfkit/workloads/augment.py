"""AlexNet's training augmentation as a measurable workload: photographs, PCA lighting, random draws, a float64
reference, the torch and Triton implementations, and the runner's glue for `augment` cases.

The transform (Krizhevsky, Sutskever, Hinton 2012, section 4.1), per image of a batch of 256x256 RGB images:
1. a random 224x224 crop (the corner uniform over the 33 x 33 possible positions);
2. a horizontal reflection with probability 1/2;
3. PCA lighting noise: add sum_i alpha_i * lambda_i * p_i to every pixel, where p_i and lambda_i are the eigenvectors
   and eigenvalues of the 3x3 covariance of RGB pixel values and alpha_i ~ N(0, 0.1) is drawn once per image;
4. normalisation to the network's input: subtract the per-channel mean and divide by the per-channel standard deviation
   (the paper subtracted the mean activity; dividing by the standard deviation is today's common practice).
Pixel values are taken in [0, 1] (uint8 / 255) throughout, so the eigenvalues, the mean and the standard deviation are
in those units and the lighting shift is a few hundredths of full scale.

Images. Real photographs that ship with a package: scikit-learn's two sample images (`load_sample_images()`:
china.jpg and flower.jpg, 427x640, decoded by pillow). A batch of N distinct 256x256 images is cut from them: image k
comes from photograph k mod 2, as a random square window with a side between 256 pixels and the photograph's shorter
side (427) at a random position, resized to 256x256 (bilinear, antialiased, uint8 to uint8). The batch is
stored as decoders produce images, height x width x channel per image: an (N, 3, 256, 256) uint8 tensor in
channels_last memory format. Every window is drawn from a seeded generator, so a batch is reproducible.

PCA. The lighting statistics (eigenvalues, eigenvectors, mean, standard deviation) are computed here from every pixel
of those two photographs (`photo_lighting()`), not taken from ImageNet or from any other source: the photographs are the
training set of this measurement.

Random draws. Crop corners, flip flags and alphas are drawn per batch by torch from a seeded generator on the batch's
device (`draw`): on a GPU they come from torch's Philox generator, without a host round trip. Every implementation
reads the same draws, so the Triton kernel and the torch operators are compared element for element.

Implementations, selected by the case's backend:
- torch: stock operators, image by image (slice the crop, flip, one multiply-add into the output), as a data-loader
  worker runs transforms; on the CPU (1 thread or all) or on a GPU.
- triton: perfkit.kernels.augment, the whole batch in one fused kernel on a GPU.
The reference is the transform written out literally, in float64 on the CPU (`reference`).

Cases: layer "augment" (perfkit.cases.AUGMENT), pass "forward", dtype = the output dtype, options `input` ("uint8" or
"float32": the stored images, float32 ones in [0, 1]) and `layout` ("nchw" or "channels_last": the output's memory
format). A case's images/s counts augmented images; its cost model reads the crop once and writes the output once.
Decoding JPEG files, which a real input pipeline also does on the CPU, is not part of it.
"""
from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from perfkit.specs import Cost, LayerSpec

SOURCE_SIZE = 256  # the stored images: 256x256, as the paper's rescaled ImageNet images
CROP = 224  # the network's input
ALPHA_STD = 0.1  # "alpha_i drawn from a Gaussian with mean zero and standard deviation 0.1"
PHOTOGRAPHS = ("china.jpg", "flower.jpg")
SOURCE = ("scikit-learn's sample photographs (sklearn.datasets.load_sample_images: china.jpg and flower.jpg, "
          "427x640 each)")
BATCH_FORMATION = ("image k of a batch: photograph k mod 2, a random square window (side 256 to 427 pixels, random "
                   "position) resized to 256x256 (bilinear, antialiased), uint8, height x width x channel")
#: Stored image dtypes a case may ask for (option `input`).
INPUT_DTYPES = {"uint8": torch.uint8, "float32": torch.float32}
LAYOUTS = ("nchw", "channels_last")
OUTPUT_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
#: Bytes of one image's draws: crop corner and flip flag (3 x int32) and three float32 alphas.
DRAW_BYTES = 3 * 4 + 3 * 4


def missing_packages() -> str | None:
    """Why the photographs cannot be loaded here, or None when they can."""
    for module, package in (("sklearn", "scikit-learn"), ("PIL", "pillow")):
        if importlib.util.find_spec(module) is None:
            return (f"the augmentation's photographs come from scikit-learn's sample images, which need {package}: "
                    "pip install 'perfkit[augment]'")
    return None


# -- the images -----------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def photographs() -> tuple[torch.Tensor, ...]:
    """scikit-learn's sample photographs (china.jpg, flower.jpg) as (3, H, W) uint8 tensors whose memory is height x
    width x channel, as decoded (a channels_last view)."""
    from sklearn.datasets import load_sample_images

    bunch = load_sample_images()
    names = [str(f).rsplit("/", 1)[-1] for f in bunch.filenames]
    if tuple(names) != PHOTOGRAPHS:
        raise RuntimeError(f"scikit-learn's sample images are {names}, expected {list(PHOTOGRAPHS)}")
    return tuple(torch.tensor(image).permute(2, 0, 1) for image in bunch.images)


def photo_batch(n: int, seed: int, size: int = SOURCE_SIZE) -> torch.Tensor:
    """N distinct size x size uint8 images cut from the photographs (see the module docstring), as an
    (N, 3, size, size) tensor in channels_last memory format, on the CPU.

    Made with one torch thread (restored afterwards): it is set-up, not measured, and per-image resizes gain nothing
    from threads that other processes may be holding."""
    photos = photographs()
    gen = torch.Generator().manual_seed(seed)
    out = torch.empty((n, 3, size, size), dtype=torch.uint8).contiguous(memory_format=torch.channels_last)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _cut(photos, out, gen, size)
    finally:
        torch.set_num_threads(threads)
    return out


def _cut(photos, out: torch.Tensor, gen: torch.Generator, size: int) -> None:
    for k in range(out.shape[0]):
        photo = photos[k % len(photos)]
        h, w = photo.shape[1:]
        side = int(torch.randint(size, min(h, w) + 1, (), generator=gen))
        top = int(torch.randint(0, h - side + 1, (), generator=gen))
        left = int(torch.randint(0, w - side + 1, (), generator=gen))
        window = photo[None, :, top:top + side, left:left + side].contiguous(memory_format=torch.channels_last)
        # uint8 in, uint8 out: torch's antialiased bilinear resize has a fast path for channels_last uint8 images
        out[k] = F.interpolate(window, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]


# -- the PCA lighting -----------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Lighting:
    """The statistics of a set of RGB pixels in [0, 1]: eigenvalues (descending) and eigenvectors (columns) of their
    3x3 covariance, the per-channel mean and standard deviation, all float64 on the CPU."""

    eigval: torch.Tensor
    eigvec: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    pixels: int
    source: str

    @property
    def color(self) -> torch.Tensor:
        """color[c, i] = lambda_i * p_i[c]: the lighting shift of channel c is sum_i alpha_i * color[c, i]."""
        return self.eigvec * self.eigval

    def shift(self, alpha: torch.Tensor) -> torch.Tensor:
        """(N, 3) per-image RGB shift sum_i alpha_i lambda_i p_i for alphas (N, 3), in float64."""
        return alpha.to(torch.float64) @ self.color.T

    def as_dict(self) -> dict:
        return {"eigenvalues": self.eigval.tolist(), "eigenvectors_columns": self.eigvec.tolist(),
                "mean": self.mean.tolist(), "std": self.std.tolist(), "pixels": self.pixels, "source": self.source,
                "units": "RGB values in [0, 1]"}


def lighting_from(images, source: str) -> Lighting:
    """The lighting statistics of every pixel of `images` ((3, H, W) uint8 tensors)."""
    pixels = torch.cat([image.reshape(3, -1).T for image in images]).to(torch.float64) / 255.0
    mean = pixels.mean(0)
    std = pixels.std(0)
    eigval, eigvec = torch.linalg.eigh(torch.cov(pixels.T))
    eigval, eigvec = eigval.flip(0), eigvec.flip(1)  # descending
    # An eigenvector's sign is arbitrary (alpha is symmetric); fix it so reports are stable: largest entry positive.
    signs = torch.sign(eigvec.gather(0, eigvec.abs().argmax(0, keepdim=True)))
    return Lighting(eigval, eigvec * signs, mean, std, pixels.shape[0], source)


@functools.lru_cache(maxsize=1)
def photo_lighting() -> Lighting:
    """The lighting statistics of the photographs the batches are cut from."""
    return lighting_from(photographs(), f"every pixel of {SOURCE}")


@functools.lru_cache(maxsize=8)
def _device_constants(lighting: Lighting, device: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """color, mean, std as float32 on `device`, made once (the kernel reads them on every call)."""
    return tuple(t.to(device=device, dtype=torch.float32) for t in (lighting.color, lighting.mean, lighting.std))


# -- the random draws -----------------------------------------------------------------------------------------------
@dataclass
class Draws:
    """One batch's random draws: crop corners `top`, `left` (N,) int32, `flip` (N,) int32 (1: mirror), `alpha` (N, 3)
    float32."""

    top: torch.Tensor
    left: torch.Tensor
    flip: torch.Tensor
    alpha: torch.Tensor

    def to(self, device) -> Draws:
        return Draws(*(t.to(device) for t in (self.top, self.left, self.flip, self.alpha)))


def _pair(size) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def draw(n: int, image_hw: tuple[int, int], size, generator: torch.Generator, device) -> Draws:
    """Draws for n images of image_hw, cropped to size (an int, or (height, width)), from `generator` (on
    `device`)."""
    h, w = image_hw
    sh, sw = _pair(size)
    kw = {"generator": generator, "device": device}
    return Draws(top=torch.randint(0, h - sh + 1, (n,), dtype=torch.int32, **kw),
                 left=torch.randint(0, w - sw + 1, (n,), dtype=torch.int32, **kw),
                 flip=torch.randint(0, 2, (n,), dtype=torch.int32, **kw),
                 alpha=torch.randn((n, 3), **kw) * ALPHA_STD)


# -- implementations ------------------------------------------------------------------------------------------------
def _input_scale(images: torch.Tensor, input_scale: float | None) -> float:
    return (1.0 / 255.0 if images.dtype == torch.uint8 else 1.0) if input_scale is None else input_scale


def reference(images: torch.Tensor, draws: Draws, lighting: Lighting, size=CROP,
              input_scale: float | None = None) -> torch.Tensor:
    """The transform written out, in float64 on the CPU: (N, 3, size_h, size_w) NCHW (size: int or pair)."""
    sh, sw = _pair(size)
    x = images.detach().to("cpu", torch.float64) * _input_scale(images, input_scale)
    d = draws.to("cpu")
    shift = lighting.shift(d.alpha)
    mean, std = lighting.mean[:, None, None], lighting.std[:, None, None]
    out = []
    for k in range(x.shape[0]):
        top, left = int(d.top[k]), int(d.left[k])
        crop = x[k, :, top:top + sh, left:left + sw]
        if int(d.flip[k]):
            crop = crop.flip(-1)
        out.append((crop + shift[k][:, None, None] - mean) / std)
    return torch.stack(out) if out else torch.empty((0, 3, sh, sw), dtype=torch.float64)


def augment_torch(images: torch.Tensor, draws: Draws, lighting: Lighting, size: int = CROP,
                  out_dtype: torch.dtype = torch.float32, channels_last: bool = False,
                  input_scale: float | None = None) -> torch.Tensor:
    """The transform in stock torch operators on the images' device, image by image: slice the crop (a view), mirror
    it (a copy) when drawn, and write scale * pixel + bias into the output in one `addcmul`, where scale and bias fold
    the input scale, the lighting shift, the mean and the standard deviation (a few tiny ops per batch)."""
    n = images.shape[0]
    color, mean, std = _device_constants(lighting, str(images.device))
    scale = (_input_scale(images, input_scale) / std).to(out_dtype)[:, None, None]
    bias = ((draws.alpha.float() @ color.T - mean) / std).to(out_dtype)  # (N, 3)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    out = torch.empty((n, 3, size, size), dtype=out_dtype, device=images.device, memory_format=fmt)
    corners = torch.stack([draws.top, draws.left, draws.flip], 1).tolist()  # one transfer from a GPU
    for k, (top, left, flip) in enumerate(corners):
        crop = images[k, :, top:top + size, left:left + size]
        if flip:
            crop = crop.flip(-1)
        torch.addcmul(bias[k][:, None, None], crop, scale, out=out[k])
    return out


def augment_triton(images: torch.Tensor, draws: Draws, lighting: Lighting, size: int = CROP,
                   out_dtype: torch.dtype = torch.float32, channels_last: bool = False,
                   input_scale: float | None = None) -> torch.Tensor:
    """The transform in one fused Triton kernel (perfkit.kernels.augment)."""
    from perfkit import kernels

    color, mean, std = _device_constants(lighting, str(images.device))
    return kernels.augment(images, draws.top, draws.left, draws.flip, draws.alpha, color, mean, std, size=size,
                           out_dtype=out_dtype, channels_last=channels_last, input_scale=input_scale)


IMPLEMENTATIONS = {"torch": augment_torch, "triton": augment_triton}


# -- cost model -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AugmentSpec(LayerSpec):
    """The augmentation as a pseudo-layer for the cost model: it reads each crop's pixels once (in the stored dtype),
    writes the output once, and does one multiply-add (2 FLOPs) per output element, plus the per-image lighting shift
    (9 multiply-adds) and its draws."""

    crop: int = CROP
    input_bytes: int = 1

    kind = "augment"

    @property
    def out_shape(self):
        return (self.in_shape[0], self.crop, self.crop)

    def forward_cost(self, batch, nbytes):
        return Cost(0, batch * (2 * self.out_numel + 2 * 9),
                    batch * (self.out_numel * (self.input_bytes + nbytes) + DRAW_BYTES))

    def backward_cost(self, batch, nbytes):
        raise ValueError("the augmentation has no backward pass")

    def describe(self):
        c, h, w = self.in_shape
        return f"augment {h}x{w} -> {self.crop}x{self.crop} crop, mirror, PCA lighting, normalise"


def spec_for(case) -> AugmentSpec:
    stored = INPUT_DTYPES[case.option("input", "uint8")]
    return AugmentSpec("augment", in_shape=(3, SOURCE_SIZE, SOURCE_SIZE), crop=CROP,
                       input_bytes=torch.empty((), dtype=stored).element_size())


# -- the runner's glue ----------------------------------------------------------------------------------------------
def unavailable_reason(case) -> str | None:
    """Why an augment case cannot run here (after its backend said it can), or None."""
    if case.backend not in IMPLEMENTATIONS:
        return f"the augmentation has no {case.backend} implementation (it has {' and '.join(IMPLEMENTATIONS)})"
    if case.pass_name != "forward":
        return "the augmentation has only a forward pass"
    if case.dtype not in OUTPUT_DTYPES:
        return f"the augmentation writes float32, float16 or bfloat16, not {case.dtype}"
    if case.option("input", "uint8") not in INPUT_DTYPES:
        return f"unknown input {case.option('input')!r}: the stored images are uint8 or float32"
    if case.option("layout", "nchw") not in LAYOUTS:
        return f"unknown layout {case.option('layout')!r}: the output is nchw or channels_last"
    return missing_packages()


def images_for(case, n: int, seed: int) -> torch.Tensor:
    """A batch of n stored images for the case, on its device."""
    batch = photo_batch(n, seed)
    if case.option("input", "uint8") == "float32":
        batch = batch.to(torch.float32) / 255.0  # keeps channels_last
    return batch.to(case.device)


def work(case, check_batch: int, check_seed: int, time_seed: int):
    """The runner's Work for an augment case: checked against `reference` with the same draws, then timed on a fresh
    batch, drawing new crops, flips and alphas on every call (the draws are part of the augmentation's cost)."""
    from perfkit.model import torch_dtype
    from perfkit.workload import Checked, Work, relative_error, tolerance_for

    implementation = IMPLEMENTATIONS[case.backend]
    out_dtype = torch_dtype(case.dtype)
    channels_last = case.option("layout", "nchw") == "channels_last"
    lighting = photo_lighting()

    def augment(images, draws):
        return implementation(images, draws, lighting, CROP, out_dtype, channels_last)

    def check_once():
        n = min(case.batch, check_batch)
        images = images_for(case, n, check_seed)
        generator = torch.Generator(device=case.device).manual_seed(check_seed)
        draws = draw(n, (SOURCE_SIZE, SOURCE_SIZE), CROP, generator, case.device)
        got = augment(images, draws)
        if channels_last and not got.is_contiguous(memory_format=torch.channels_last):
            raise ValueError("the output is not in channels_last memory format")
        error = relative_error(got, reference(images, draws, lighting, CROP))
        return Checked(error, "output", n, tolerance_for(case.dtype, None))

    def timed():
        images = images_for(case, case.batch, time_seed)
        generator = torch.Generator(device=case.device).manual_seed(time_seed)

        def run():
            augment(images, draw(case.batch, (SOURCE_SIZE, SOURCE_SIZE), CROP, generator, case.device))

        return run, None

    cost = spec_for(case).cost("forward", case.batch, case.dtype)
    return Work(check_once, timed, cost)
