"""On-device preprocessing in jnp, run inside the compiled train step: uint8 -> float,
random crop with zero padding, horizontal flip, cutout, per-channel normalization. Geometric
transforms are applied identically to every spatial key of the batch ("image", "mask")."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

SPATIAL_KEYS = ("image", "mask")


def normalize(images: jax.Array, mean: Sequence[float], std: Sequence[float]) -> jax.Array:
    """(x - mean) / std per channel, with `x` on the [0, 255] scale of uint8 pixels."""
    mean = jnp.asarray(mean, jnp.float32).reshape(1, 1, 1, -1)
    std = jnp.asarray(std, jnp.float32).reshape(1, 1, 1, -1)
    return (images.astype(jnp.float32) - mean) / std


def random_crop(rng: jax.Array, arrays: dict[str, jax.Array], padding: int) -> dict:
    """torchvision `RandomCrop(size, padding)`: zero-pad by `padding` and crop the original
    size at a uniform random offset per example (same offset for image and mask)."""
    if not padding:
        return arrays
    n, h, w = arrays["image"].shape[:3]
    offsets = jax.random.randint(rng, (n, 2), 0, 2 * padding + 1)

    def crop(x: jax.Array) -> jax.Array:
        pad = [(0, 0), (padding, padding), (padding, padding)] + [(0, 0)] * (x.ndim - 3)
        padded = jnp.pad(x, pad)
        one = lambda img, off: jax.lax.dynamic_slice(
            img, (off[0], off[1]) + (0,) * (x.ndim - 3), (h, w) + img.shape[2:]
        )
        return jax.vmap(one)(padded, offsets)

    return {k: crop(v) if k in SPATIAL_KEYS else v for k, v in arrays.items()}


def random_flip(rng: jax.Array, arrays: dict[str, jax.Array]) -> dict:
    """Horizontal flip of each example with probability 1/2."""
    n = arrays["image"].shape[0]
    flip = jax.random.bernoulli(rng, 0.5, (n,))

    def apply(x: jax.Array) -> jax.Array:
        cond = flip.reshape((n,) + (1,) * (x.ndim - 1))
        return jnp.where(cond, x[:, :, ::-1], x)

    return {k: apply(v) if k in SPATIAL_KEYS else v for k, v in arrays.items()}


def cutout(rng: jax.Array, images: jax.Array, size: int) -> jax.Array:
    """Cutout (DeVries & Taylor, 2017): zero a `size` x `size` square centred at a uniform
    random pixel (clipped at the border) of each normalized image."""
    if not size:
        return images
    n, h, w = images.shape[:3]
    r_y, r_x = jax.random.split(rng)
    cy = jax.random.randint(r_y, (n, 1, 1), 0, h)
    cx = jax.random.randint(r_x, (n, 1, 1), 0, w)
    rows = jnp.arange(h)[None, :, None]
    cols = jnp.arange(w)[None, None, :]
    half = size // 2
    inside = (jnp.abs(rows - cy) <= half - (1 - size % 2) * (rows > cy)) & (
        jnp.abs(cols - cx) <= half - (1 - size % 2) * (cols > cx)
    )
    return jnp.where(inside[..., None], jnp.zeros((), images.dtype), images)


def preprocess(
    rng: jax.Array | None,
    batch: dict[str, jax.Array],
    *,
    mean: Sequence[float],
    std: Sequence[float],
    crop_padding: int = 0,
    flip: bool = False,
    cutout_size: int = 0,
    train: bool = False,
) -> dict[str, jax.Array]:
    """The whole on-device pipeline: augment (train only), then normalize "image" to float32."""
    batch = dict(batch)
    if train and rng is not None:
        r_crop, r_flip, r_cut = jax.random.split(rng, 3)
        batch = random_crop(r_crop, batch, crop_padding)
        if flip:
            batch = random_flip(r_flip, batch)
        batch["image"] = normalize(batch["image"], mean, std)
        batch["image"] = cutout(r_cut, batch["image"], cutout_size)
    else:
        batch["image"] = normalize(batch["image"], mean, std)
    return batch
