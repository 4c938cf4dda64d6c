"""airbench94's augmentations against airbench 0.1.8's utils.py, transcribed in numpy:
translation by reflect-padded random crops (`batch_crop` of `F.pad(..., 'reflect')`,
lines 53-71 and 141-146), alternating flip (lines 151-156) and flip + translate test-time
augmentation (`infer`, lines 11-30)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn.data.augment import alternating_flip, augment, random_crop, tta_logits


def _images(n=6, h=5, w=4, c=2, seed=0):
    return np.random.default_rng(seed).normal(size=(n, h, w, c)).astype(np.float32)


def test_reflect_crop_is_a_translation_of_the_reflect_padded_image():
    x = _images()
    out = np.asarray(random_crop(jax.random.PRNGKey(3), {"image": jnp.asarray(x)}, 2,
                                 padding_mode="reflect")["image"])
    padded = np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)), mode="reflect")  # F.pad 'reflect'
    shifts = set()
    for i in range(len(x)):
        hits = [(dy, dx) for dy in range(5) for dx in range(5)
                if np.array_equal(padded[i, dy:dy + 5, dx:dx + 4], out[i])]
        assert hits, f"example {i} is not a window of its reflect-padded image"
        shifts.add(hits[0])
    assert len(shifts) > 1  # shifts are drawn per example in [-2, 2] x [-2, 2]


def test_unknown_padding_mode_is_named():
    with pytest.raises(ValueError, match="padding_mode"):
        random_crop(jax.random.PRNGKey(0), {"image": jnp.zeros((1, 4, 4, 1))}, 1, "wrap")


def test_alternating_flip_flips_every_image_in_odd_epochs_only():
    x = _images()
    batch = {"image": jnp.asarray(x), "label": jnp.arange(6)}
    np.testing.assert_array_equal(alternating_flip(batch, 0)["image"], x)
    np.testing.assert_array_equal(alternating_flip(batch, 1)["image"], x[:, :, ::-1])
    np.testing.assert_array_equal(alternating_flip(batch, jnp.asarray(4))["image"], x)
    np.testing.assert_array_equal(alternating_flip(batch, 3)["label"], np.arange(6))


def test_augment_alternates_by_epoch_and_needs_the_epoch():
    x = (np.arange(2 * 4 * 4 * 1) % 256).astype(np.uint8).reshape(2, 4, 4, 1)
    kw = dict(mean=(0.0,), std=(1.0,), flip=True, flip_mode="alternate", train=True)
    even = augment(jax.random.PRNGKey(0), {"image": jnp.asarray(x)}, epoch=2, **kw)
    odd = augment(jax.random.PRNGKey(0), {"image": jnp.asarray(x)}, epoch=5, **kw)
    np.testing.assert_array_equal(even["image"], x.astype(np.float32))
    np.testing.assert_array_equal(odd["image"], x[:, :, ::-1].astype(np.float32))
    with pytest.raises(ValueError, match="epoch"):
        augment(jax.random.PRNGKey(0), {"image": jnp.asarray(x)}, **kw)


def _airbench_infer(net, x, level):
    """utils.py infer(): infer_basic / infer_mirror / infer_mirror_translate, NHWC."""
    def mirror(x):
        return 0.5 * net(x) + 0.5 * net(x[:, :, ::-1])

    if level == 0:
        return net(x)
    if level == 1:
        return mirror(x)
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
    h, w = x.shape[1:3]
    views = [padded[:, 0:h, 0:w], padded[:, 2:h + 2, 2:w + 2]]
    translate = np.stack([mirror(v) for v in views]).mean(0)
    return 0.5 * mirror(x) + 0.5 * translate


@pytest.mark.parametrize("level", [0, 1, 2])
def test_tta_matches_airbench_infer(level):
    x = _images(n=3, h=6, w=6, c=3, seed=1)
    weights = np.random.default_rng(2).normal(size=(6 * 6 * 3, 4)).astype(np.float32)
    net = lambda v: np.asarray(v).reshape(len(v), -1) @ weights  # position-sensitive "model"
    ours = tta_logits(lambda v: jnp.asarray(net(v)), jnp.asarray(x), level)
    np.testing.assert_allclose(ours, _airbench_infer(net, x, level), rtol=1e-5, atol=1e-5)


def test_tta_level_is_checked():
    with pytest.raises(ValueError, match="level"):
        tta_logits(lambda v: v, jnp.zeros((1, 4, 4, 1)), 3)
