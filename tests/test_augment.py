"""perfkit.workloads.augment: the photographs and the batches cut from them, the PCA lighting computed from them, the random
draws, the torch implementation against the float64 reference, the cost model, and augment cases in the runner."""
import pytest
import torch

from perfkit.workloads import augment as A
from perfkit.cases import AUGMENT, Case
from perfkit.runner import RunnerConfig
from perfkit.measure.timer import TimingPolicy
from perfkit.workload import relative_error

needs_photos = pytest.mark.skipif(A.missing_packages() is not None, reason=str(A.missing_packages()))


def _case(**kw):
    fields = {"layer": AUGMENT, "pass_name": "forward", "batch": 3, "options": (("input", "uint8"), ("layout", "nchw"))}
    return Case(**{**fields, **kw})


@needs_photos
def test_the_photographs_are_scikit_learns_two_sample_images():
    photos = A.photographs()
    assert len(photos) == 2
    for photo in photos:
        assert photo.shape == (3, 427, 640) and photo.dtype == torch.uint8
        assert photo.permute(1, 2, 0).is_contiguous()  # height x width x channel, as decoded


@needs_photos
def test_a_batch_is_distinct_reproducible_256x256_hwc_images():
    threads = torch.get_num_threads()
    batch = A.photo_batch(6, seed=1)
    assert torch.get_num_threads() == threads  # cut with one thread, the count restored
    assert batch.shape == (6, 3, 256, 256) and batch.dtype == torch.uint8
    assert batch.is_contiguous(memory_format=torch.channels_last)
    assert len({bytes(img.numpy().tobytes()) for img in batch}) == 6
    assert torch.equal(batch, A.photo_batch(6, seed=1))
    assert not torch.equal(batch, A.photo_batch(6, seed=2))
    assert batch.float().std() > 20  # photographs, not flat images


def test_lighting_is_the_pca_of_the_given_pixels():
    gen = torch.Generator().manual_seed(0)
    base = torch.rand(3, 40, 50, generator=gen)
    images = [(base * 200 + torch.rand(3, 40, 50, generator=gen) * 40).to(torch.uint8)]
    lighting = A.lighting_from(images, "test")
    pixels = images[0].reshape(3, -1).T.double() / 255
    assert torch.allclose(lighting.mean, pixels.mean(0)) and torch.allclose(lighting.std, pixels.std(0))
    cov = torch.cov(pixels.T)
    v, lam = lighting.eigvec, lighting.eigval
    assert torch.allclose(v @ torch.diag(lam) @ v.T, cov, atol=1e-12)  # eigendecomposition of the covariance
    assert torch.allclose(v.T @ v, torch.eye(3, dtype=torch.float64), atol=1e-12)
    assert lam[0] >= lam[1] >= lam[2] > 0
    # the shift of an image is sum_i alpha_i lambda_i p_i
    alpha = torch.tensor([[1.0, 0.0, 0.0], [0.3, -2.0, 0.5]])
    assert torch.allclose(lighting.shift(alpha)[0], lam[0] * v[:, 0])
    by_hand = 0.3 * lam[0] * v[:, 0] - 2 * lam[1] * v[:, 1] + 0.5 * lam[2] * v[:, 2]
    assert torch.allclose(lighting.shift(alpha)[1], by_hand)


@needs_photos
def test_photo_lighting_comes_from_the_photographs():
    lighting = A.photo_lighting()
    assert lighting.pixels == 2 * 427 * 640
    assert "china.jpg" in lighting.source and "flower.jpg" in lighting.source
    data = lighting.as_dict()
    assert data["units"] == "RGB values in [0, 1]" and len(data["eigenvalues"]) == 3
    assert 0 < data["eigenvalues"][0] < 1  # variances of values in [0, 1]


def test_draws_cover_the_positions_and_the_flip():
    d = A.draw(4000, (256, 256), 224, torch.Generator().manual_seed(0), "cpu")
    assert d.top.dtype == d.left.dtype == d.flip.dtype == torch.int32
    assert int(d.top.min()) == 0 and int(d.top.max()) == 32 and int(d.left.max()) == 32
    assert set(d.flip.tolist()) == {0, 1} and 0.45 < d.flip.float().mean() < 0.55
    assert abs(float(d.alpha.std()) - A.ALPHA_STD) < 0.01 and d.alpha.shape == (4000, 3)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("stored", ["uint8", "float32"])
def test_torch_implementation_matches_the_reference(stored, channels_last):
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (5, 40, 40, 3), dtype=torch.uint8, generator=gen).permute(0, 3, 1, 2)
    if stored == "float32":
        images = images.float() / 255
    lighting = A.lighting_from([torch.randint(0, 256, (3, 9, 9), dtype=torch.uint8, generator=gen)], "test")
    d = A.draw(5, (40, 40), 32, gen, "cpu")
    got = A.augment_torch(images, d, lighting, 32, channels_last=channels_last)
    assert got.shape == (5, 3, 32, 32) and got.dtype == torch.float32
    assert got.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    want = A.reference(images, d, lighting, 32)
    assert relative_error(got, want) < 1e-6
    # by hand, for one flipped image
    k = int(torch.nonzero(d.flip)[0])
    t, l = int(d.top[k]), int(d.left[k])
    x = images[k].double() * (1 / 255 if stored == "uint8" else 1.0)
    crop = x[:, t:t + 32, l:l + 32].flip(-1)
    by_hand = (crop + lighting.shift(d.alpha[k:k + 1])[0][:, None, None] - lighting.mean[:, None, None]) \
        / lighting.std[:, None, None]
    assert torch.allclose(want[k], by_hand)


def test_cost_model_reads_the_crop_and_writes_the_output():
    spec = A.spec_for(_case())
    cost = spec.cost("forward", 10, "float32")
    out = 3 * 224 * 224
    assert spec.out_shape == (3, 224, 224)
    assert cost.gemm_flops == 0 and cost.other_flops == 10 * (2 * out + 18)
    assert cost.bytes_min == 10 * (out * (1 + 4) + A.DRAW_BYTES)
    assert A.spec_for(_case(options=(("input", "float32"), ("layout", "nchw")))).input_bytes == 4


def test_unavailable_reasons():
    assert "no compile implementation" in A.unavailable_reason(_case(backend="compile"))
    assert "only a forward pass" in A.unavailable_reason(_case(pass_name="train_step"))
    assert "float32, float16 or bfloat16" in A.unavailable_reason(_case(dtype="tf32"))
    assert "unknown layout" in A.unavailable_reason(_case(options=(("input", "uint8"), ("layout", "nhwc"))))
    assert A.unavailable_reason(_case()) == A.missing_packages()


@pytest.fixture
def runner(open_runner):
    return open_runner(RunnerConfig(timing=TimingPolicy(warmup=1, min_reps=2, min_time_s=0.0), check_batch=2,
                                    device_peaks=False))


@needs_photos
def test_the_runner_checks_then_times_an_augment_case(runner):
    rows = runner.run([_case(threads=1), _case(backend="triton"), _case(backend="compile")])
    ok, triton, compiled = rows
    assert ok.status == "ok", ok.note
    assert ok.layer == AUGMENT and ok.layer_kind == "augment" and ok.threads == 1
    assert ok.error_rel < 1e-6 and ok.error_batch == 2 and ok.error_note == "worst tensor: output"
    assert ok.images_per_s == pytest.approx(3 / ok.time_median_s)
    assert ok.bytes_min == A.spec_for(_case()).cost("forward", 3, "float32").bytes_min
    assert '"input": "uint8"' in ok.options and '"layout": "nchw"' in ok.options
    if not torch.cuda.is_available():
        assert triton.status == "skipped" and "interpreter" in triton.note
    assert compiled.status == "skipped" and "no compile implementation" in compiled.note
