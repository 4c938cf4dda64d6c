"""On-device augmentation in jnp, run inside the compiled train and eval steps: uint8 ->
float, random crop with zero or reflect padding (translation), horizontal flip (random or
alternating by epoch), cutout, per-channel normalization; and flip + translate test-time
augmentation. Geometric transforms are applied identically to every spatial key of the
batch ("image", "mask") and move the boxes of a detection batch ("boxes" [N, K, 4] in pixels,
with "box_mask" [N, K]) with the image. The host-side transforms (input pipeline,
evaluation and inference) are `jaxcnn.data.transforms`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

SPATIAL_KEYS = ("image", "mask")


def flip_boxes(boxes: jax.Array, width: int) -> jax.Array:
    """Boxes [..., 4] (x1, y1, x2, y2) of an image mirrored left-right: (W - x2, y1, W - x1, y2)."""
    return jnp.stack(
        [width - boxes[..., 2], boxes[..., 1], width - boxes[..., 0], boxes[..., 3]], axis=-1
    )


def _flip_where(flip: jax.Array, arrays: dict[str, jax.Array]) -> dict:
    """Mirror the examples where `flip` [N] (or a scalar) is True: spatial keys and boxes."""
    out = {}
    for k, v in arrays.items():
        if k in SPATIAL_KEYS:
            v = jnp.where(flip.reshape(flip.shape + (1,) * (v.ndim - flip.ndim)), v[:, :, ::-1], v)
        elif k == "boxes":
            width = arrays["image"].shape[2]
            v = jnp.where(flip.reshape(flip.shape + (1,) * (v.ndim - flip.ndim)),
                          flip_boxes(v, width), v)  # fmt: skip
        out[k] = v
    return out


def normalize(images: jax.Array, mean: Sequence[float], std: Sequence[float]) -> jax.Array:
    """(x - mean) / std per channel, with `x` on the [0, 255] scale of uint8 pixels."""
    mean = jnp.asarray(mean, jnp.float32).reshape(1, 1, 1, -1)
    std = jnp.asarray(std, jnp.float32).reshape(1, 1, 1, -1)
    return (images.astype(jnp.float32) - mean) / std


PADDING_MODES = ("constant", "reflect")
FLIP_MODES = ("random", "alternate")


def random_crop(rng: jax.Array, arrays: dict[str, jax.Array], padding: int,
                padding_mode: str = "constant") -> dict:
    """torchvision `RandomCrop(size, padding, padding_mode=...)`: pad by `padding` (zeros,
    or "reflect": airbench's random translation, `batch_crop` of reflect-padded images) and
    crop the original size at a uniform random offset per example (same for image and mask)."""
    if not padding:
        return arrays
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {PADDING_MODES}; got {padding_mode!r}")
    n, h, w = arrays["image"].shape[:3]
    offsets = jax.random.randint(rng, (n, 2), 0, 2 * padding + 1)

    def crop(x: jax.Array) -> jax.Array:
        pad = [(0, 0), (padding, padding), (padding, padding)] + [(0, 0)] * (x.ndim - 3)
        padded = jnp.pad(x, pad, mode=padding_mode)
        one = lambda img, off: jax.lax.dynamic_slice(
            img, (off[0], off[1]) + (0,) * (x.ndim - 3), (h, w) + img.shape[2:]
        )
        return jax.vmap(one)(padded, offsets)

    out = {k: crop(v) if k in SPATIAL_KEYS else v for k, v in arrays.items()}
    if "boxes" in arrays:  # shift with the crop, clip to the image, drop what leaves it
        shift = (padding - offsets[:, ::-1]).astype(jnp.float32)  # (dx, dy) per example
        boxes = arrays["boxes"] + jnp.tile(shift, 2)[:, None, :]
        boxes = jnp.clip(boxes, 0.0, jnp.asarray([w, h, w, h], jnp.float32)[None, None, :])
        out["boxes"] = boxes
        if "box_mask" in arrays:
            kept = (boxes[..., 2] > boxes[..., 0]) & (boxes[..., 3] > boxes[..., 1])
            out["box_mask"] = arrays["box_mask"] & kept
    return out


def random_flip(rng: jax.Array, arrays: dict[str, jax.Array]) -> dict:
    """Horizontal flip of each example with probability 1/2."""
    n = arrays["image"].shape[0]
    return _flip_where(jax.random.bernoulli(rng, 0.5, (n,)), arrays)


def alternating_flip(arrays: dict[str, jax.Array], epoch: jax.Array | int) -> dict:
    """Flip every example horizontally in odd epochs (airbench's `altflip`, utils.py lines
    151-156). Applied after one random flip of the data set (`random_flip` with a fixed key),
    each image is seen in both orientations in any two consecutive epochs."""
    return _flip_where((jnp.asarray(epoch) % 2) == 1, arrays)


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


def augment(
    rng: jax.Array | None,
    batch: dict[str, jax.Array],
    *,
    mean: Sequence[float],
    std: Sequence[float],
    crop_padding: int = 0,
    flip: bool = False,
    cutout_size: int = 0,
    train: bool = False,
    padding_mode: str = "constant",
    flip_mode: str = "random",
    epoch: jax.Array | int | None = None,
) -> dict[str, jax.Array]:
    """The whole on-device pipeline: augment (train only), then normalize "image" to float32.
    `flip_mode` "random" flips each example with probability 1/2, "alternate" flips the
    whole batch in odd epochs (`alternating_flip`; needs `epoch`)."""
    if flip and flip_mode not in FLIP_MODES:
        raise ValueError(f"flip_mode must be one of {FLIP_MODES}; got {flip_mode!r}")
    batch = dict(batch)
    if train and rng is not None:
        r_crop, r_flip, r_cut = jax.random.split(rng, 3)
        batch = random_crop(r_crop, batch, crop_padding, padding_mode)
        if flip and flip_mode == "alternate":
            if epoch is None:
                raise ValueError("flip_mode='alternate' needs the epoch")
            batch = alternating_flip(batch, epoch)
        elif flip:
            batch = random_flip(r_flip, batch)
        batch["image"] = normalize(batch["image"], mean, std)
        batch["image"] = cutout(r_cut, batch["image"], cutout_size)
    else:
        batch["image"] = normalize(batch["image"], mean, std)
    return batch


TTA_LEVELS = (0, 1, 2)


def tta_logits(fn: Callable[[jax.Array], jax.Array], images: jax.Array, level: int
                      ) -> jax.Array:
    """airbench's test-time augmentation (utils.py `infer`, lines 11-30) around `fn` (images
    -> logits): level 0 is `fn(x)`; level 1 averages `x` and its mirror image; level 2 gives
    the mirror average half the weight and spreads the other half over the mirror averages of
    `x` translated by one pixel up-left and down-right (reflect padding)."""
    if level not in TTA_LEVELS:
        raise ValueError(f"test-time augmentation level must be one of {TTA_LEVELS}; got {level}")
    if level == 0:
        return fn(images)

    def mirror(x: jax.Array) -> jax.Array:
        return 0.5 * fn(x) + 0.5 * fn(x[:, :, ::-1])

    logits = mirror(images)
    if level == 1:
        return logits
    h, w = images.shape[1:3]
    padded = jnp.pad(images, [(0, 0), (1, 1), (1, 1)] + [(0, 0)] * (images.ndim - 3),
                     mode="reflect")
    shifted = [padded[:, 0:h, 0:w], padded[:, 2:h + 2, 2:w + 2]]
    translated = sum(mirror(x) for x in shifted) / len(shifted)
    return 0.5 * logits + 0.5 * translated


@dataclasses.dataclass(frozen=True)
class Augment:
    """The static `augment` settings of a run (from `config.data`), called in the step as
    `augment(rng, batch, train)`."""

    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (255.0,)
    crop_padding: int = 0
    flip: bool = False
    cutout: int = 0

    @classmethod
    def from_config(cls, data: Any) -> Augment:
        """Settings from a `config.data` block."""
        return cls(tuple(data.mean), tuple(data.std), int(data.crop_padding), bool(data.flip),
                   int(data.cutout))

    def __call__(self, rng: jax.Array | None, batch: dict, train: bool) -> dict:
        return augment(rng, batch, mean=self.mean, std=self.std, crop_padding=self.crop_padding,
                       flip=self.flip, cutout_size=self.cutout, train=train)
