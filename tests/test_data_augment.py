"""On-device augmentation: shapes and dtypes kept, random crops are windows of the padded
image, flips mirror, image and mask move together, cutout zeroes one square, normalization
numbers, and every transform is a pure function of its key."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from model_testing import fast_jit

import jaxcnn
from jaxcnn.data import (
    augment,
    center_crop,
    color_jitter,
    cutout,
    normalize,
    random_crop,
    random_flip,
    random_resized_crop,
    random_rotation,
    random_vertical_flip,
    rotate,
    ten_crop,
)


def _batch(n=8, h=6, w=5):
    image = np.arange(n * h * w * 3, dtype=np.float32).reshape(n, h, w, 3) % 251 + 1
    mask = (image[..., 0] % 3).astype(np.int32)
    return {"image": jnp.asarray(image), "mask": jnp.asarray(mask),
            "label": jnp.arange(n)}


def test_random_crop_returns_windows_of_the_zero_padded_image():
    batch = _batch()
    out = random_crop(jax.random.PRNGKey(0), batch, padding=2)
    assert out["image"].shape == batch["image"].shape
    padded = np.pad(np.asarray(batch["image"]), ((0, 0), (2, 2), (2, 2), (0, 0)))
    offsets = set()
    for i in range(8):
        hits = [(dy, dx) for dy in range(5) for dx in range(5)
                if np.array_equal(padded[i, dy:dy + 6, dx:dx + 5], out["image"][i])]
        assert hits, f"example {i} is not a window of its padded image"
        offsets.add(hits[0])
        # the mask was cropped at the same offset
        dy, dx = hits[0]
        padded_mask = np.pad(np.asarray(batch["mask"][i]), 2)
        np.testing.assert_array_equal(padded_mask[dy:dy + 6, dx:dx + 5], out["mask"][i])
    assert len(offsets) > 1
    np.testing.assert_array_equal(out["label"], batch["label"])


def test_random_flip_mirrors_about_half_and_moves_masks_too():
    batch = _batch(n=64)
    out = random_flip(jax.random.PRNGKey(1), batch)
    flipped = 0
    for i in range(64):
        same = np.array_equal(out["image"][i], batch["image"][i])
        mirror = np.array_equal(out["image"][i], batch["image"][i, :, ::-1])
        assert same or mirror
        flipped += mirror
        expect = batch["mask"][i, :, ::-1] if mirror else batch["mask"][i]
        np.testing.assert_array_equal(out["mask"][i], expect)
    assert 16 < flipped < 48


def test_cutout_zeroes_one_square_per_image():
    images = jnp.ones((32, 16, 16, 3))
    out = np.asarray(cutout(jax.random.PRNGKey(2), images, 4))
    zeros = (out[..., 0] == 0).sum(axis=(1, 2))
    assert zeros.max() == 16 and zeros.min() >= 4  # 4x4, clipped at borders
    assert np.all((out == 0) | (out == 1))


def test_normalize_and_augment_numbers():
    x = jnp.full((1, 2, 2, 3), 255, jnp.uint8)
    out = normalize(x, (127.5, 0.0, 255.0), (127.5, 255.0, 1.0))
    np.testing.assert_allclose(out[0, 0, 0], [1.0, 1.0, 0.0])
    assert out.dtype == jnp.float32
    batch = {"image": jnp.asarray(np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3)),
                                  jnp.uint8), "label": jnp.arange(4)}
    kw = dict(mean=(0.0,), std=(255.0,), crop_padding=2, flip=True, cutout_size=3)
    a = augment(jax.random.PRNGKey(3), batch, train=True, **kw)
    b = augment(jax.random.PRNGKey(3), batch, train=True, **kw)
    np.testing.assert_array_equal(a["image"], b["image"])  # pure function of the key
    assert a["image"].shape == (4, 8, 8, 3) and a["image"].dtype == jnp.float32
    evaluated = augment(None, batch, train=False, **kw)  # no augmentation in eval
    np.testing.assert_allclose(evaluated["image"], np.asarray(batch["image"]) / 255.0)


# ---------------------------------------------------------------- issue 14: more augmentations


def test_random_crop_to_a_smaller_size_is_alexnets_227_of_256_window():
    batch = _batch(n=6, h=9, w=8)
    out = random_crop(jax.random.PRNGKey(4), batch, padding=0, size=5)
    assert out["image"].shape == (6, 5, 5, 3) and out["mask"].shape == (6, 5, 5)
    for i in range(6):
        hits = [(dy, dx) for dy in range(5) for dx in range(4)
                if np.array_equal(batch["image"][i, dy:dy + 5, dx:dx + 5], out["image"][i])]
        assert len(hits) == 1
        dy, dx = hits[0]
        np.testing.assert_array_equal(batch["mask"][i, dy:dy + 5, dx:dx + 5], out["mask"][i])
    with pytest.raises(jaxcnn.InputError, match="does not fit"):
        random_crop(jax.random.PRNGKey(4), batch, padding=0, size=10)


def test_random_vertical_flip_mirrors_rows_of_image_and_mask():
    batch = _batch(n=32)
    out = random_vertical_flip(jax.random.PRNGKey(5), batch)
    flipped = 0
    for i in range(32):
        mirror = np.array_equal(out["image"][i], batch["image"][i, ::-1])
        assert mirror or np.array_equal(out["image"][i], batch["image"][i])
        flipped += mirror
        expect = batch["mask"][i, ::-1] if mirror else batch["mask"][i]
        np.testing.assert_array_equal(out["mask"][i], expect)
    assert 6 < flipped < 26


def _colour_images(n=16):
    rng = np.random.default_rng(0)
    return jnp.asarray(rng.uniform(60, 140, (n, 4, 4, 3)), jnp.float32)  # no clipping at 1.5


def test_brightness_scales_each_image_by_one_factor_in_range():
    x = _colour_images()
    out = np.asarray(color_jitter(jax.random.PRNGKey(6), x, brightness=0.4))
    factors = out / np.asarray(x)
    per_image = factors.reshape(16, -1)
    np.testing.assert_allclose(per_image, per_image[:, :1].repeat(48, 1), rtol=1e-5)
    assert per_image.min() >= 0.6 - 1e-6 and per_image.max() <= 1.4 + 1e-6
    assert per_image[:, 0].std() > 0.05  # different factors for different images
    big = color_jitter(jax.random.PRNGKey(6), jnp.full((4, 2, 2, 3), 250.0), brightness=0.9)
    assert float(big.max()) <= 255.0  # clipped to the pixel range


def _blend_factors(out, x, base):
    """Least-squares f per image with out = f x + (1 - f) base, and the fit's residual."""
    d, e = (x - base).reshape(len(x), -1), (out - base).reshape(len(x), -1)
    f = (d * e).sum(1) / (d * d).sum(1)
    return f, np.abs(e - f[:, None] * d).max()


def test_contrast_blends_with_the_mean_gray_and_saturation_with_the_grayscale():
    x = _colour_images()
    ref = np.asarray(x)
    gray = (ref @ np.array([0.2989, 0.587, 0.114], np.float32))[..., None]
    out = np.asarray(color_jitter(jax.random.PRNGKey(7), x, contrast=0.5))
    f, residual = _blend_factors(out, ref, gray.mean(axis=(1, 2, 3), keepdims=True))
    assert residual < 1e-3 and f.min() >= 0.5 - 1e-4 and f.max() <= 1.5 + 1e-4
    out = np.asarray(color_jitter(jax.random.PRNGKey(8), x, saturation=0.5))
    f, residual = _blend_factors(out, ref, gray)
    assert residual < 1e-3 and f.min() >= 0.5 - 1e-4 and f.max() <= 1.5 + 1e-4
    assert f.std() > 0.05
    # gray pixels are unchanged by saturation (to 1e-4: torchvision's weights sum to 0.9999)
    gray_rgb = jnp.repeat(jnp.asarray(gray), 3, -1)
    np.testing.assert_allclose(color_jitter(jax.random.PRNGKey(8), gray_rgb, saturation=0.9),
                               gray_rgb, rtol=2e-4)


def _coordinate_batch(n=8, h=24, w=32):
    """Image channel 0 = row, channel 1 = column; mask = row * w + column."""
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    image = np.stack([yy, xx, np.zeros_like(yy)], -1).astype(np.float32)
    return {"image": jnp.asarray(np.broadcast_to(image, (n, h, w, 3))),
            "mask": jnp.asarray(np.broadcast_to(yy * w + xx, (n, h, w)).astype(np.int32))}


def test_random_resized_crop_boxes_have_torchvisions_area_and_ratio_and_move_masks_too():
    batch = _coordinate_batch()
    out = fast_jit(lambda k, b: random_resized_crop(k, b, size=12, scale=(0.25, 1.0)))(
        jax.random.PRNGKey(9), batch)
    assert out["image"].shape == (8, 12, 12, 3) and out["mask"].shape == (8, 12, 12)
    rows, cols = np.asarray(out["mask"]) // 32, np.asarray(out["mask"]) % 32
    areas = []
    for i in range(8):
        box_h = rows[i].max() - rows[i].min() + 1
        box_w = cols[i].max() - cols[i].min() + 1
        areas.append(box_h * box_w / (24 * 32))
        assert 0.25 * 0.6 <= areas[-1] <= 1.0  # nearest sampling may skip a row or column
        assert 3 / 4 * 0.6 < box_w / box_h < 4 / 3 / 0.6
        # the bilinear image and the nearest mask show the same place (within a pixel)
        assert np.abs(out["image"][i, ..., 0] - rows[i]).max() <= 1.5
        assert np.abs(out["image"][i, ..., 1] - cols[i]).max() <= 1.5
    assert len(set(np.round(areas, 3))) > 1
    whole = _coordinate_batch(n=2, h=12, w=12)
    crop_all = fast_jit(lambda k, b: random_resized_crop(k, b, 12, scale=(1.0, 1.0),
                                                         ratio=(1.0, 1.0)))
    full = crop_all(jax.random.PRNGKey(9), whole)
    np.testing.assert_allclose(full["image"], whole["image"], atol=1e-4)


def test_rotation_by_90_degrees_is_rot90_counter_clockwise_as_torchvision():
    batch = _coordinate_batch(n=2, h=7, w=7)
    angles = jnp.asarray([90.0, 45.0])
    out, mask, ones = fast_jit(lambda b, a: (
        rotate(b["image"], a), rotate(b["mask"], a, nearest=True),
        rotate(jnp.ones_like(b["image"]), a)))(batch, angles)
    np.testing.assert_allclose(out[0], np.rot90(np.asarray(batch["image"][0])), atol=1e-4)
    np.testing.assert_array_equal(mask[0], np.rot90(np.asarray(batch["mask"][0])))
    # 45 degrees: corners come from outside the image and are filled with 0
    assert float(ones[1, 0, 0, 0]) == 0.0 and float(ones[1, 3, 3, 0]) == 1.0
    assert int(mask[1, 0, 0]) == 0 and int(mask[1, 3, 3]) == int(batch["mask"][1, 3, 3])
    randomly = fast_jit(lambda k, b: random_rotation(k, b, 30.0))(jax.random.PRNGKey(10), batch)
    assert randomly["image"].shape == batch["image"].shape
    assert randomly["mask"].dtype == batch["mask"].dtype


def test_ten_crop_is_four_corners_and_centre_then_their_mirror_images():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 8, 9, 3)), jnp.float32)
    views = np.asarray(ten_crop(x, 5))
    assert views.shape == (10, 2, 5, 5, 3)
    ref = np.asarray(x)
    expected = [ref[:, :5, :5], ref[:, :5, 4:], ref[:, 3:, :5], ref[:, 3:, 4:],
                ref[:, 2:7, 2:7]]
    flipped = ref[:, :, ::-1]
    expected += [flipped[:, :5, :5], flipped[:, :5, 4:], flipped[:, 3:, :5], flipped[:, 3:, 4:],
                 flipped[:, 2:7, 2:7]]
    for got, want in zip(views, expected, strict=True):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(center_crop(x, 5), ref[:, 2:7, 2:7])


def test_preprocess_with_every_option_is_a_pure_function_of_the_key():
    batch = {"image": jnp.asarray(np.random.default_rng(1).integers(0, 256, (4, 12, 12, 3)),
                                  jnp.uint8), "label": jnp.arange(4)}
    kw = dict(mean=(127.0,), std=(64.0,), flip=True, vertical_flip=True, rotation=15.0,
              brightness=0.2, contrast=0.2, saturation=0.2, crop_size=10)
    run = fast_jit(lambda key, b: augment(key, b, train=True, **kw))
    a, b = run(jax.random.PRNGKey(11), batch), run(jax.random.PRNGKey(11), batch)
    np.testing.assert_array_equal(a["image"], b["image"])
    assert a["image"].shape == (4, 10, 10, 3) and bool(jnp.all(jnp.isfinite(a["image"])))
    c = run(jax.random.PRNGKey(12), batch)
    assert not np.allclose(a["image"], c["image"])
    # evaluation: the centre crop of the training size, no randomness
    ev = augment(None, batch, train=False, **kw)
    expected = (np.asarray(batch["image"], np.float32)[:, 1:11, 1:11] - 127) / 64
    np.testing.assert_allclose(ev["image"], expected, rtol=1e-6)
    rrc = fast_jit(lambda key, b: augment(key, b, train=True, mean=(0.0,), std=(1.0,),
                                             resized_crop=8))(jax.random.PRNGKey(13), batch)
    assert rrc["image"].shape == (4, 8, 8, 3)


def test_vertical_flip_moves_boxes_and_other_geometry_refuses_them():
    image = jnp.zeros((2, 10, 8, 3))
    boxes = jnp.asarray([[[1.0, 2.0, 4.0, 5.0]], [[0.0, 0.0, 8.0, 10.0]]])
    out = random_vertical_flip(jax.random.PRNGKey(0), {"image": image, "boxes": boxes})
    flipped = np.asarray([[1.0, 5.0, 4.0, 8.0], [0.0, 0.0, 8.0, 10.0]])
    for i in range(2):
        assert np.allclose(out["boxes"][i, 0], flipped[i]) or np.allclose(out["boxes"][i, 0],
                                                                          boxes[i, 0])
    with pytest.raises(jaxcnn.ConfigError, match="boxes"):
        random_rotation(jax.random.PRNGKey(0), {"image": image, "boxes": boxes}, 10.0)
