"""The host transforms against torchvision's `transforms.v2`, from golden files written by
tests/golden/make_transforms_golden.py (torchvision run once, given the same crop parameters):
RandomResizedCrop bit for bit, Resize + CenterCrop within one uint8 level, RandomCrop
(padding) + flip bit for bit, the crop sampler's fallback exactly and its distribution
statistically; reduced-size JPEG decoding stays close to full decoding."""

from __future__ import annotations

import dataclasses
import io
import random
from pathlib import Path

import numpy as np
import PIL
import pytest
from PIL import Image

from jaxcnn.data import transforms as T
from jaxcnn.errors import ConfigError

GOLDEN = np.load(Path(__file__).parent / "golden" / "transforms.npz")
N_IMAGES = 4
# The goldens were made by torchvision on Pillow 13, whose resize rounds differently from
# Pillow 10.4-12.2 (pyproject allows >= 10.4) by at most one level: bit for bit there, else
# within 1 (torchvision on an older Pillow calls the same PIL resize as jaxcnn).
PIL_TOLERANCE = 0 if int(PIL.__version__.split(".")[0]) >= 13 else 1


def golden_image(i: int) -> Image.Image:
    return Image.open(io.BytesIO(GOLDEN[f"png_{i}"].tobytes())).convert("RGB")


@pytest.mark.parametrize("i", range(N_IMAGES))
def test_resized_crop_equals_torchvision_v2_on_pil_bit_for_bit(i):
    img = golden_image(i)
    size = GOLDEN[f"rrc_pil_{i}"].shape[1]
    for params, want, want_tensor in zip(GOLDEN[f"rrc_params_{i}"], GOLDEN[f"rrc_pil_{i}"],
                                         GOLDEN[f"rrc_tensor_{i}"], strict=True):
        got = T.resized_crop(img.copy(), *(int(p) for p in params), size)
        np.testing.assert_allclose(got, want, rtol=0, atol=PIL_TOLERANCE)
        # torchvision's tensor kernel (uint8 antialiased bilinear) rounds differently.
        assert np.abs(got.astype(int) - want_tensor).max() <= 2


@pytest.mark.parametrize("k", range(5))
def test_resize_center_crop_equals_torchvision_v2_within_one_level(k):
    i, resize, crop = (int(v) for v in GOLDEN[f"eval_case_{k}"])
    got = T.resize_center_crop(golden_image(i), resize, crop)
    want = GOLDEN[f"eval_pil_{k}"]
    assert got.shape == want.shape == (crop, crop, 3)
    diff = np.abs(got.astype(int) - want)
    assert diff.max() <= 1, f"max |diff| {diff.max()}"
    assert (diff > 0).mean() < 0.05  # a rounding difference, not a shifted image
    assert np.abs(got.astype(int) - GOLDEN[f"eval_tensor_{k}"]).max() <= 2


@pytest.mark.parametrize("i", [0, 3])
def test_pad_random_crop_and_flip_equal_torchvision(i):
    arr = np.asarray(golden_image(i))

    class Fixed:  # stands in for the generator: returns the recorded offsets
        def __init__(self, offset):
            self.draws = list(offset)

        def randrange(self, n):
            assert n == 9
            return int(self.draws.pop(0))

    for offset, want in zip(GOLDEN[f"padcrop_offsets_{i}"], GOLDEN[f"padcrop_flip_{i}"],
                            strict=True):
        got = T.pad_random_crop(Fixed(offset), arr, 4)[:, ::-1]
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("k", range(3))
def test_random_resized_crop_fallback_equals_torchvision(k):
    h, w, lo, hi = GOLDEN[f"fallback_case_{k}"]
    got = T.random_resized_crop_params(random.Random(k), int(h), int(w), (lo, hi))
    assert got == tuple(int(v) for v in GOLDEN[f"fallback_params_{k}"])


@pytest.mark.parametrize("name,shape", [("500x375", (375, 500)), ("64x480", (480, 64))])
def test_random_resized_crop_sampler_matches_torchvision_distribution(name, shape):
    from scipy.stats import ks_2samp

    theirs = GOLDEN[f"rrc_samples_{name}"].astype(np.float64)
    rng = random.Random(123)
    ours = np.array([T.random_resized_crop_params(rng, *shape) for _ in range(len(theirs))],
                    np.float64)
    h, w = shape
    for p in (ours, theirs):  # every crop lies inside the image
        assert (p[:, 0] >= 0).all() and (p[:, 0] + p[:, 2] <= h).all()
        assert (p[:, 1] >= 0).all() and (p[:, 1] + p[:, 3] <= w).all()
    stats = {
        "area": lambda p: p[:, 2] * p[:, 3] / (h * w),
        "log_ratio": lambda p: np.log(p[:, 3] / p[:, 2]),
        "top": lambda p: p[:, 0] / h,
        "left": lambda p: p[:, 1] / w,
    }
    for what, f in stats.items():
        res = ks_2samp(f(ours), f(theirs))
        assert res.pvalue > 1e-3, f"{what}: KS {res.statistic:.3f} (p={res.pvalue:.2g})"
    # The tall image often exhausts the 10 attempts: the central fallback's share matches.
    fallback = lambda p: np.mean((p[:, 2] == h) | (p[:, 3] == w))
    assert abs(fallback(ours) - fallback(theirs)) < 0.03


def _jpeg(h: int, w: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    arr = np.stack([127 + 100 * np.sin(x / (9 + 4 * c)) * np.cos(y / 13) for c in range(3)], -1)
    arr = np.clip(arr + rng.normal(0, 4, arr.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=92)
    return buf.getvalue()


def test_draft_decodes_large_jpegs_at_reduced_size_close_to_full_decode():
    data = _jpeg(1200, 1600)
    img = Image.open(io.BytesIO(data))
    exact = T.resized_crop(Image.open(io.BytesIO(data)), 100, 200, 900, 1000, 224)
    fast = T.resized_crop(img, 100, 200, 900, 1000, 224, draft=True)
    assert img.size == (400, 300)  # decoded at 1/4: the 900x1000 crop keeps >= 224 pixels
    assert np.abs(fast.astype(int) - exact).mean() < 2.0
    small = Image.open(io.BytesIO(data))
    T.resized_crop(small, 0, 0, 300, 300, 224, draft=True)
    assert small.size == (1600, 1200)  # a 300-pixel crop would lose detail at 1/2: no draft
    ev = Image.open(io.BytesIO(data))
    fast_eval = T.resize_center_crop(ev, 256, 224, draft=True)
    assert ev.size == (400, 300)  # the centre crop still spans >= 224 decoded pixels
    exact_eval = T.resize_center_crop(Image.open(io.BytesIO(data)), 256, 224)
    assert np.abs(fast_eval.astype(int) - exact_eval).mean() < 2.0


def _reference(data: bytes, t: T.ImageTransform, seed: int) -> np.ndarray:
    """The transform applied the plain way: full decode, array flip (torchvision's order)."""
    img = Image.open(io.BytesIO(data))
    img.load()
    if not t.train:
        return T.resize_center_crop(img, t.resize or t.size, t.size)
    rng = random.Random(seed)
    params = T.random_resized_crop_params(rng, img.size[1], img.size[0])
    out = T.resized_crop(img, *params, t.size)
    return out[:, ::-1] if rng.random() < 0.5 else out


@pytest.mark.parametrize("draft", [False, True])
def test_decoding_only_the_rows_above_the_crop_equals_a_full_decode(draft):
    data = _jpeg(700, 500, seed=5)  # crops end above the last row: decoding stops early
    for seed in range(12):
        train = T.ImageTransform(train=True, size=64, random_resized_crop=True, flip=True,
                                 draft=draft)
        ref = _reference(data, dataclasses.replace(train, draft=False), seed)
        got = train(data, random.Random(seed))
        if draft:  # a reduced-size decode is close, not equal; the rows must still be right
            assert np.abs(got.astype(int) - ref).mean() < 2.0
        else:
            np.testing.assert_array_equal(got, ref)
    ev = T.ImageTransform(size=224, resize=256, draft=False)
    np.testing.assert_array_equal(ev(data), _reference(data, ev, 0))
    with pytest.raises(OSError, match="truncated"):  # the rows the crop needs are missing
        T.resized_crop(Image.open(io.BytesIO(data[:len(data) // 3])), 600, 0, 100, 100, 64)


def test_image_transform_is_a_pure_function_of_its_rng_and_handles_grayscale():
    data = _jpeg(90, 120, seed=3)
    train = T.ImageTransform(train=True, size=32, random_resized_crop=True, flip=True)
    a = train(data, random.Random(71))
    b = train(data, random.Random(71))
    c = train(data, random.Random(72))
    assert a.shape == (32, 32, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    gray = T.ImageTransform(size=24, resize=28, channels=1)(data)
    assert gray.shape == (24, 24, 1)
    arr = np.asarray(Image.open(io.BytesIO(data)))
    native = T.ImageTransform(train=True, crop_padding=2, flip=True)(arr, random.Random(0))
    assert native.shape == arr.shape


def test_image_transform_rejects_impossible_settings():
    with pytest.raises(ConfigError, match="image_size"):
        T.ImageTransform(train=True, random_resized_crop=True)
    with pytest.raises(ConfigError, match="scale"):
        T.ImageTransform(train=True, size=8, random_resized_crop=True, scale=(0.5, 0.1))
    with pytest.raises(ConfigError, match="resize"):
        T.ImageTransform(size=224, resize=200)
