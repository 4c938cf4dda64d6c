"""On-device preprocessing in jnp, run inside the compiled train step, each transform a pure
function of its rng key (so a step is deterministic given the state's rng):

- geometric, applied identically to every spatial key of the batch ("image", and "mask"
  with nearest-neighbour sampling): random crop (zero or reflect padding, i.e. translation,
  and/or a smaller crop such as AlexNet's 227 of 256), horizontal flip (random or
  alternating by epoch) and vertical flip, which also move the boxes of a detection batch
  ("boxes" [N, K, 4] in pixels, with "box_mask" [N, K]); random-resized crop (torchvision's
  `RandomResizedCrop` / Inception-style) and rotation (not for detection batches);
- photometric, on the image's [0, 255] pixel scale before normalization: brightness,
  contrast and saturation jitter (torchvision's `ColorJitter` factors);
- normalization to float32 and cutout;
- evaluation: `center_crop`, `ten_crop` (AlexNet's four corners and centre, and their mirror
  images, `Augment.ten_crop_scores`) and airbench's flip + translate test-time augmentation
  (`tta_logits`).

The host-side transforms (input pipeline, evaluation and inference) are
`jaxcnn.data.transforms`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from jaxcnn.errors import ConfigError, InputError

SPATIAL_KEYS = ("image", "mask")
# ITU-R 601-2 luma, as torchvision's `rgb_to_grayscale`.
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)


def flip_boxes(boxes: jax.Array, width: int) -> jax.Array:
    """Boxes [..., 4] (x1, y1, x2, y2) of an image mirrored left-right: (W - x2, y1, W - x1, y2)."""
    return jnp.stack(
        [width - boxes[..., 2], boxes[..., 1], width - boxes[..., 0], boxes[..., 3]], axis=-1
    )


def vflip_boxes(boxes: jax.Array, height: int) -> jax.Array:
    """Boxes [..., 4] of an image mirrored top-bottom: (x1, H - y2, x2, H - y1)."""
    return jnp.stack(
        [boxes[..., 0], height - boxes[..., 3], boxes[..., 2], height - boxes[..., 1]], axis=-1
    )


def _flip_where(flip: jax.Array, arrays: dict[str, jax.Array], vertical: bool = False) -> dict:
    """Mirror the examples where `flip` [N] (or a scalar) is True, left-right (or top-bottom
    with `vertical`): spatial keys and boxes."""
    axis = 1 if vertical else 2
    out = {}
    for k, v in arrays.items():
        if k in SPATIAL_KEYS:
            v = jnp.where(flip.reshape(flip.shape + (1,) * (v.ndim - flip.ndim)),
                          jnp.flip(v, axis), v)  # fmt: skip
        elif k == "boxes":
            size = arrays["image"].shape[axis]
            moved = vflip_boxes(v, size) if vertical else flip_boxes(v, size)
            v = jnp.where(flip.reshape(flip.shape + (1,) * (v.ndim - flip.ndim)), moved, v)
        out[k] = v
    return out


def _spatial(arrays: dict[str, jax.Array], fn, what: str = "") -> dict:
    """`fn(x, is_mask)` on every spatial key; other keys pass through. `what` names a
    transform that cannot move boxes: a detection batch is then refused."""
    if what and "boxes" in arrays:
        raise ConfigError(
            f"{what} cannot move the boxes of a detection batch; use random crops and flips "
            "for detection data."
        )
    return {k: fn(v, k != "image") if k in SPATIAL_KEYS else v for k, v in arrays.items()}


def normalize(images: jax.Array, mean: Sequence[float], std: Sequence[float]) -> jax.Array:
    """(x - mean) / std per channel, with `x` on the [0, 255] scale of uint8 pixels."""
    mean = jnp.asarray(mean, jnp.float32).reshape(1, 1, 1, -1)
    std = jnp.asarray(std, jnp.float32).reshape(1, 1, 1, -1)
    return (images.astype(jnp.float32) - mean) / std


PADDING_MODES = ("constant", "reflect")
FLIP_MODES = ("random", "alternate")


def random_crop(rng: jax.Array, arrays: dict[str, jax.Array], padding: int,
                padding_mode: str = "constant", size: int | None = None) -> dict:
    """torchvision `RandomCrop(size, padding, padding_mode=...)`: pad by `padding` (zeros,
    or "reflect": airbench's random translation, `batch_crop` of reflect-padded images) and
    crop `size` x `size` (default: the original size; AlexNet's training crops are 227 of
    256x256 images) at a uniform random offset per example (same for image and mask)."""
    n, h, w = arrays["image"].shape[:3]
    out_h, out_w = (h, w) if size is None else (size, size)
    if not padding and (out_h, out_w) == (h, w):
        return arrays
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {PADDING_MODES}; got {padding_mode!r}")
    if out_h > h + 2 * padding or out_w > w + 2 * padding:
        raise InputError(
            f"random_crop of {out_h}x{out_w} does not fit in {h}x{w} images padded by "
            f"{padding}; lower the crop size or resize the images (data.image_size) first."
        )
    span = jnp.asarray([h + 2 * padding - out_h + 1, w + 2 * padding - out_w + 1])
    offsets = jax.random.randint(rng, (n, 2), 0, span[None, :])

    def crop(x: jax.Array) -> jax.Array:
        pad = [(0, 0), (padding, padding), (padding, padding)] + [(0, 0)] * (x.ndim - 3)
        padded = jnp.pad(x, pad, mode=padding_mode)
        one = lambda img, off: jax.lax.dynamic_slice(
            img, (off[0], off[1]) + (0,) * (x.ndim - 3), (out_h, out_w) + img.shape[2:]
        )
        return jax.vmap(one)(padded, offsets)

    out = {k: crop(v) if k in SPATIAL_KEYS else v for k, v in arrays.items()}
    if "boxes" in arrays:  # shift with the crop, clip to the image, drop what leaves it
        shift = (padding - offsets[:, ::-1]).astype(jnp.float32)  # (dx, dy) per example
        boxes = arrays["boxes"] + jnp.tile(shift, 2)[:, None, :]
        limits = jnp.asarray([out_w, out_h, out_w, out_h], jnp.float32)[None, None, :]
        boxes = jnp.clip(boxes, 0.0, limits)
        out["boxes"] = boxes
        if "box_mask" in arrays:
            kept = (boxes[..., 2] > boxes[..., 0]) & (boxes[..., 3] > boxes[..., 1])
            out["box_mask"] = arrays["box_mask"] & kept
    return out


def random_flip(rng: jax.Array, arrays: dict[str, jax.Array]) -> dict:
    """Horizontal flip (a reflection, in AlexNet's words) of each example with probability
    1/2 (`RandomHorizontalFlip`)."""
    n = arrays["image"].shape[0]
    return _flip_where(jax.random.bernoulli(rng, 0.5, (n,)), arrays)


def random_vertical_flip(rng: jax.Array, arrays: dict[str, jax.Array]) -> dict:
    """Vertical flip of each example with probability 1/2 (`RandomVerticalFlip`)."""
    n = arrays["image"].shape[0]
    return _flip_where(jax.random.bernoulli(rng, 0.5, (n,)), arrays, vertical=True)


def alternating_flip(arrays: dict[str, jax.Array], epoch: jax.Array | int) -> dict:
    """Flip every example horizontally in odd epochs (airbench's `altflip`, utils.py lines
    151-156). Applied after one random flip of the data set (`random_flip` with a fixed key),
    each image is seen in both orientations in any two consecutive epochs."""
    return _flip_where((jnp.asarray(epoch) % 2) == 1, arrays)


def _factors(rng: jax.Array, n: int, amount: float, name: str) -> jax.Array:
    """torchvision's ColorJitter factors: uniform in [max(0, 1 - amount), 1 + amount]."""
    if amount < 0:
        raise ConfigError(f"{name} jitter must be >= 0; got {amount}.")
    return jax.random.uniform(rng, (n, 1, 1, 1), minval=max(0.0, 1.0 - amount),
                              maxval=1.0 + amount)


def grayscale(images: jax.Array) -> jax.Array:
    """Luma [N, H, W, 1] of RGB images (torchvision's weights); gray images pass through."""
    if images.shape[-1] == 1:
        return images
    weights = jnp.asarray(GRAY_WEIGHTS, images.dtype).reshape((1,) * (images.ndim - 1) + (3,))
    return jnp.sum(images * weights, axis=-1, keepdims=True)


def color_jitter(rng: jax.Array, images: jax.Array, brightness: float = 0.0,
                 contrast: float = 0.0, saturation: float = 0.0, max_value: float = 255.0
                 ) -> jax.Array:
    """torchvision's `ColorJitter(brightness, contrast, saturation)` on float images with
    pixels in [0, max_value]: each factor f ~ U[max(0, 1 - a), 1 + a] per image; brightness
    scales the pixels, contrast blends with the mean gray level of the image, saturation with
    the image's grayscale version; every result is clipped to [0, max_value]. The order is
    fixed (brightness, contrast, saturation) where torchvision draws a random one."""
    n = images.shape[0]
    r_b, r_c, r_s = jax.random.split(rng, 3)
    x = images.astype(jnp.float32)
    clip = lambda v: jnp.clip(v, 0.0, max_value)
    if brightness:
        x = clip(x * _factors(r_b, n, brightness, "brightness"))
    if contrast:
        mean = jnp.mean(grayscale(x), axis=(1, 2, 3), keepdims=True)
        f = _factors(r_c, n, contrast, "contrast")
        x = clip(f * x + (1.0 - f) * mean)
    if saturation and x.shape[-1] == 3:
        f = _factors(r_s, n, saturation, "saturation")
        x = clip(f * x + (1.0 - f) * grayscale(x))
    return x


def _nearest(x: jax.Array, ys: jax.Array, xs: jax.Array) -> jax.Array:
    """x[ys, xs] for one example [H, W, ...] with integer source grids (clipped)."""
    ys = jnp.clip(ys, 0, x.shape[0] - 1)
    xs = jnp.clip(xs, 0, x.shape[1] - 1)
    return x[ys, xs]


def random_resized_crop(rng: jax.Array, arrays: dict[str, jax.Array], size: int,
                        scale: tuple[float, float] = (0.08, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> dict:
    """torchvision `RandomResizedCrop(size, scale, ratio)` (the Inception crop of Szegedy et
    al., 2015): a box of area fraction U(scale) and log-uniform aspect ratio in `ratio`,
    placed uniformly, resized to `size` x `size` (bilinear with antialiasing for the image,
    nearest for masks). As torchvision: 10 tries per image, then a centre crop with the
    ratio clamped to `ratio`."""
    if not 0 < scale[0] <= scale[1] <= 1 or not 0 < ratio[0] <= ratio[1]:
        raise ConfigError(f"random_resized_crop needs 0 < scale[0] <= scale[1] <= 1 and "
                          f"0 < ratio[0] <= ratio[1]; got scale={scale}, ratio={ratio}.")
    n, h, w = arrays["image"].shape[:3]
    tries = 10
    r_area, r_ratio, r_y, r_x = jax.random.split(rng, 4)
    area = h * w * jax.random.uniform(r_area, (n, tries), minval=scale[0], maxval=scale[1])
    log_r = jax.random.uniform(r_ratio, (n, tries), minval=math.log(ratio[0]),
                               maxval=math.log(ratio[1]))
    aspect = jnp.exp(log_r)
    cw = jnp.round(jnp.sqrt(area * aspect)).astype(jnp.int32)
    ch = jnp.round(jnp.sqrt(area / aspect)).astype(jnp.int32)
    ok = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
    first = jnp.argmax(ok, axis=1)
    found = jnp.any(ok, axis=1)
    pick = lambda a: jnp.take_along_axis(a, first[:, None], 1)[:, 0]
    # torchvision's fallback: the whole image, cropped to the nearest allowed ratio.
    in_ratio = w / h
    if in_ratio < ratio[0]:
        fw, fh = w, int(round(w / ratio[0]))
    elif in_ratio > ratio[1]:
        fw, fh = int(round(h * ratio[1])), h
    else:
        fw, fh = w, h
    cw = jnp.where(found, pick(cw), fw)
    ch = jnp.where(found, pick(ch), fh)
    top = jnp.where(found, jnp.floor(jax.random.uniform(r_y, (n,)) * (h - ch + 1)),
                    (h - fh) // 2).astype(jnp.int32)
    left = jnp.where(found, jnp.floor(jax.random.uniform(r_x, (n,)) * (w - cw + 1)),
                     (w - fw) // 2).astype(jnp.int32)
    return _spatial(arrays, lambda x, is_mask: _resize_boxes(x, top, left, ch, cw, size,
                                                             is_mask), "random_resized_crop")


def _resize_boxes(x: jax.Array, top: jax.Array, left: jax.Array, box_h: jax.Array,
                  box_w: jax.Array, size: int, nearest: bool) -> jax.Array:
    """Crop box i of example i (traced offsets and sizes) resized to `size` x `size`."""
    if nearest:  # masks: the source pixel under each output pixel centre
        pos = (jnp.arange(size, dtype=jnp.float32) + 0.5) / size

        def one(img, t, lft, bh, bw):
            ys = (t + jnp.floor(pos * bh)).astype(jnp.int32)
            xs = (lft + jnp.floor(pos * bw)).astype(jnp.int32)
            return _nearest(img, ys[:, None], xs[None, :])

        return jax.vmap(one)(x, top, left, box_h, box_w)

    def resize(img, t, lft, bh, bw):
        sy, sx = size / bh.astype(jnp.float32), size / bw.astype(jnp.float32)
        out = jax.image.scale_and_translate(
            img.astype(jnp.float32), (size, size, img.shape[-1]), (0, 1),
            jnp.stack([sy, sx]), jnp.stack([-t * sy, -lft * sx]), method="linear",
        )
        return out

    return jax.vmap(resize)(x, top, left, box_h, box_w)


def random_rotation(rng: jax.Array, arrays: dict[str, jax.Array], degrees: float) -> dict:
    """torchvision `RandomRotation(degrees)`: rotate each example about its centre by an angle
    ~ U(-degrees, degrees), counter-clockwise for positive angles, filling with 0; bilinear
    for the image (torchvision's default is nearest), nearest for masks."""
    if not degrees:
        return arrays
    n = arrays["image"].shape[0]
    angles = jax.random.uniform(rng, (n,), minval=-degrees, maxval=degrees)
    return _spatial(arrays, lambda x, is_mask: rotate(x, angles, nearest=is_mask),
                    "random_rotation")


def rotate(x: jax.Array, degrees: jax.Array, *, nearest: bool = False) -> jax.Array:
    """Rotate each example of x [N, H, W, ...] about its centre by degrees[i] (positive:
    counter-clockwise, as torchvision's `rotate`), filling with 0."""
    h, w = x.shape[1:3]
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    yy, xx = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32) - cy,
                          jnp.arange(w, dtype=jnp.float32) - cx, indexing="ij")

    def one(img, deg):
        theta = jnp.deg2rad(deg)
        cos, sin = jnp.cos(theta), jnp.sin(theta)
        src_x = cos * xx - sin * yy + cx  # the inverse rotation of each output pixel
        src_y = sin * xx + cos * yy + cy
        if nearest:
            ys = jnp.round(src_y).astype(jnp.int32)
            xs = jnp.round(src_x).astype(jnp.int32)
            inside = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
            out = _nearest(img, ys, xs)
            return jnp.where(inside.reshape(inside.shape + (1,) * (img.ndim - 2)), out,
                             jnp.zeros((), img.dtype))
        flat = img.reshape(h, w, -1).astype(jnp.float32)
        sample = lambda c: jax.scipy.ndimage.map_coordinates(c, [src_y, src_x], order=1,
                                                             mode="constant", cval=0.0)
        return jax.vmap(sample, in_axes=-1, out_axes=-1)(flat).reshape(img.shape)

    return jax.vmap(one)(x, degrees)


def center_crop(images: jax.Array, size: int) -> jax.Array:
    """The central `size` x `size` window (`CenterCrop`; offsets rounded as torchvision)."""
    h, w = images.shape[1:3]
    if size > h or size > w:
        raise InputError(f"center_crop of {size}x{size} needs images at least that large; "
                         f"got {h}x{w}.")
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return images[:, top:top + size, left:left + size]


def ten_crop(images: jax.Array, size: int) -> jax.Array:
    """AlexNet's test-time views (Krizhevsky et al., 2012, section 4.1; torchvision
    `TenCrop`): the four corner and the centre `size` x `size` patches, then the same five of
    the horizontally reflected image, stacked as [10, N, size, size, C]."""
    h, w = images.shape[1:3]
    if size > h or size > w:
        raise InputError(f"ten_crop of {size}x{size} needs images at least that large; "
                         f"got {h}x{w}.")
    five = lambda x: [x[:, :size, :size], x[:, :size, w - size:], x[:, h - size:, :size],
                      x[:, h - size:, w - size:], center_crop(x, size)]
    return jnp.stack(five(images) + five(images[:, :, ::-1]))


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
    crop_size: int = 0,
    vertical_flip: bool = False,
    resized_crop: int = 0,
    resized_crop_scale: tuple[float, float] = (0.08, 1.0),
    rotation: float = 0.0,
    brightness: float = 0.0,
    contrast: float = 0.0,
    saturation: float = 0.0,
    eval_crop: bool = True,
) -> dict[str, jax.Array]:
    """The whole on-device pipeline. Training: geometric augmentation (random-resized crop to
    `resized_crop`, or a random `crop_size` crop after `crop_padding`; flips, `flip_mode`
    "random" per example with probability 1/2 or "alternate" for the whole batch in odd
    epochs (`alternating_flip`, needs `epoch`); rotation), colour jitter on the 0..255
    scale, normalization, cutout. Evaluation: a centre crop to the training crop size
    (`crop_size` or `resized_crop`; not with `eval_crop=False`, for ten-crop testing), then
    normalization."""
    if flip and flip_mode not in FLIP_MODES:
        raise ValueError(f"flip_mode must be one of {FLIP_MODES}; got {flip_mode!r}")
    batch = dict(batch)
    out_size = resized_crop or crop_size
    if train and rng is not None:
        r_crop, r_flip, r_cut, r_vflip, r_rot, r_jit = jax.random.split(rng, 6)
        if resized_crop:
            batch = random_resized_crop(r_crop, batch, resized_crop, tuple(resized_crop_scale))
        else:
            batch = random_crop(r_crop, batch, crop_padding, padding_mode, crop_size or None)
        if flip and flip_mode == "alternate":
            if epoch is None:
                raise ValueError("flip_mode='alternate' needs the epoch")
            batch = alternating_flip(batch, epoch)
        elif flip:
            batch = random_flip(r_flip, batch)
        if vertical_flip:
            batch = random_vertical_flip(r_vflip, batch)
        batch = random_rotation(r_rot, batch, rotation)
        if brightness or contrast or saturation:
            batch["image"] = color_jitter(r_jit, batch["image"], brightness, contrast,
                                          saturation)
        batch["image"] = normalize(batch["image"], mean, std)
        batch["image"] = cutout(r_cut, batch["image"], cutout_size)
    else:
        if eval_crop and out_size and batch["image"].shape[1:3] != (out_size, out_size):
            batch = _spatial(batch, lambda x, is_mask: center_crop(x, out_size), "center_crop")
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
    """The static augmentation settings of a run (from `config.data`), called in the step as
    `augment(rng, batch, train, epoch)` (the epoch drives alternating flips); with
    `ten_crop` the eval step scores images through `ten_crop_scores`."""

    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (255.0,)
    crop_padding: int = 0
    flip: bool = False
    cutout: int = 0
    padding_mode: str = "constant"
    flip_mode: str = "random"
    crop_size: int = 0
    vertical_flip: bool = False
    resized_crop: int = 0
    resized_crop_scale: tuple[float, float] = (0.08, 1.0)
    rotation: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    ten_crop: bool = False  # AlexNet's ten-patch evaluation of crop_size patches

    def __post_init__(self) -> None:
        if self.ten_crop and not self.crop_size:
            raise ConfigError("data.ten_crop needs data.crop_size (the side of the patches).")

    @classmethod
    def from_config(cls, data: Any, *, on_host: bool = False) -> Augment:
        """Settings from a `config.data` block. `on_host`: the host input pipeline already
        cropped (crop_padding, resized_crop) and flipped (a streamed source); the step does
        the rest (normalization, colour, rotation, cutout)."""
        get = lambda key, default: data.get(key, default)
        crop, flip, resized = ((0, False, 0) if on_host else
                               (int(data.crop_padding), bool(data.flip),
                                int(get("resized_crop", 0))))
        return cls(tuple(data.mean), tuple(data.std), crop, flip,
                   int(data.cutout), data.get("padding_mode", "constant"),
                   data.get("flip_mode", "random"), int(get("crop_size", 0)),
                   bool(get("vertical_flip", False)), resized,
                   tuple(float(v) for v in get("resized_crop_scale", (0.08, 1.0))),
                   float(get("rotation", 0.0)), float(get("brightness", 0.0)),
                   float(get("contrast", 0.0)), float(get("saturation", 0.0)),
                   bool(get("ten_crop", False)))

    def __call__(self, rng: jax.Array | None, batch: dict, train: bool,
                 epoch: jax.Array | int | None = None) -> dict:
        return augment(rng, batch, mean=self.mean, std=self.std, crop_padding=self.crop_padding,
                       flip=self.flip, cutout_size=self.cutout, train=train,
                       padding_mode=self.padding_mode, flip_mode=self.flip_mode, epoch=epoch,
                       crop_size=self.crop_size, vertical_flip=self.vertical_flip,
                       resized_crop=self.resized_crop,
                       resized_crop_scale=self.resized_crop_scale, rotation=self.rotation,
                       brightness=self.brightness, contrast=self.contrast,
                       saturation=self.saturation, eval_crop=not self.ten_crop)

    def ten_crop_scores(self, fn: Callable[[jax.Array], jax.Array], images: jax.Array
                        ) -> jax.Array:
        """AlexNet's test: "averaging the predictions of the softmax layer on the ten
        patches" (Krizhevsky et al., 2012, section 4.1; `ten_crop` of `crop_size`) of the
        normalized `images` through `fn` (images -> logits), returned as log-probabilities
        so that argmax and cross-entropy read them as logits."""
        views = ten_crop(images, self.crop_size)
        probs = jnp.mean(jax.vmap(lambda v: jax.nn.softmax(
            fn(v).astype(jnp.float32), axis=-1))(views), axis=0)
        return jnp.log(jnp.maximum(probs, 1e-30))
