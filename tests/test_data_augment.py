"""On-device augmentation: shapes and dtypes kept, random crops are windows of the padded
image, flips mirror, image and mask move together, cutout zeroes one square, normalization
numbers, and every transform is a pure function of its key."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn.data import augment, cutout, normalize, random_crop, random_flip


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
