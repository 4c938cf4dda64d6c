"""Host-side image transforms. For the input pipeline, run per example in its worker
processes: decode (with PIL's reduced-size JPEG `draft` when the output is much smaller, and
only the rows above the region used),
torchvision's RandomResizedCrop (10-attempt sampling and central fallback) and horizontal flip
for training, Resize(shorter side) + CenterCrop for evaluation, RandomCrop with zero padding
(`ImageTransform`, uint8 out; normalization happens on the device). For inference,
`EvalTransform`: one image of any kind to a normalized float32 model input, the transform a
set of weights expects (torchvision's `Weights.transforms()`). Mean and std are on the
[0, 255] pixel scale throughout jaxcnn (as `config.data.mean`), so no value is ever rescaled
back and forth.

Given the same crop parameters the outputs equal torchvision's `transforms.v2` on PIL images
(the classic `ImageFolder` recipe): RandomResizedCrop bit for bit, the evaluation transform
within one uint8 level (it resizes only the centre crop's pixels, a PIL `box` resize).
tests/golden/make_transforms_golden.py records torchvision's outputs; tests/test_data_transforms.py
compares. numpy + PIL only: no jax here, the workers never compile anything."""

from __future__ import annotations

import dataclasses
import io
import math
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from jaxcnn.data.images import ImageLike, as_image_list, load_image, to_8bit
from jaxcnn.errors import ConfigError, InputError

# torchvision's ImageNet statistics (0.485, 0.456, 0.406) / (0.229, 0.224, 0.225) x 255.
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)
LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R 601, as PIL's convert("L")

IMAGENET_SCALE = (0.08, 1.0)
IMAGENET_RATIO = (3.0 / 4.0, 4.0 / 3.0)
_DRAFT_SCALES = (8, 4, 2)  # the reductions libjpeg can apply while decoding (1 = none)


def resized_size(height: int, width: int, size: int) -> tuple[int, int]:
    """torchvision's `resize(img, size)` output for an int size: the short side becomes
    `size`, the long side `int(size * long / short)` (truncated, as torchvision does)."""
    short, long = (height, width) if height <= width else (width, height)
    new_short, new_long = size, int(size * long / short)
    return (new_short, new_long) if height <= width else (new_long, new_short)


def center_crop_anchor(height: int, width: int, crop: int) -> tuple[int, int]:
    """torchvision's `center_crop` top/left offsets: `int(round((size - crop) / 2))`."""
    return int(round((height - crop) / 2.0)), int(round((width - crop) / 2.0))


def center_crop(array: np.ndarray, crop: int | tuple[int, int]) -> np.ndarray:
    """torchvision's `center_crop` on HWC (a side, or (height, width)): zero-pad when smaller,
    top/left offsets rounded."""
    crop_h, crop_w = (crop, crop) if isinstance(crop, int) else crop
    h, w = array.shape[:2]
    if h < crop_h or w < crop_w:
        pad_h, pad_w = max(crop_h - h, 0), max(crop_w - w, 0)
        pad = [(pad_h // 2, (pad_h + 1) // 2), (pad_w // 2, (pad_w + 1) // 2)]
        array = np.pad(array, pad + [(0, 0)] * (array.ndim - 2))
        h, w = array.shape[:2]
    top, left = int(round((h - crop_h) / 2.0)), int(round((w - crop_w) / 2.0))
    return array[top:top + crop_h, left:left + crop_w]


def random_resized_crop_params(
    rng: random.Random, height: int, width: int,
    scale: tuple[float, float] = IMAGENET_SCALE, ratio: tuple[float, float] = IMAGENET_RATIO,
) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a RandomResizedCrop (Szegedy et al. 2015, "Going deeper
    with convolutions"), as torchvision's `RandomResizedCrop.make_params`: up to 10 tries of
    an area fraction uniform in `scale` and a log-uniform aspect ratio in `ratio`; if none
    fits, the whole image clipped to the ratio range, centred."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return rng.randrange(height - h + 1), rng.randrange(width - w + 1), h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def _mode(channels: int) -> str:
    return "L" if channels == 1 else "RGB"


def open_image(data: bytes | str | Path | np.ndarray | Image.Image) -> Image.Image:
    """A PIL image from encoded bytes, a path, an HWC/HW uint8 array or a PIL image. Only the
    header is read for encoded input (decoding waits for `load`/`draft`)."""
    if isinstance(data, Image.Image):
        return data
    if isinstance(data, np.ndarray):
        return Image.fromarray(data[..., 0] if data.ndim == 3 and data.shape[-1] == 1 else data)
    if isinstance(data, str | Path):
        return Image.open(data)
    return Image.open(io.BytesIO(data))


def _draft(img: Image.Image, mode: str, region: tuple[float, float], size: tuple[int, int]
           ) -> tuple[float, float]:
    """Let libjpeg decode `img` at 1/2, 1/4 or 1/8 scale when the `region` (w, h) of the full
    image that becomes `size` (w, h) keeps at least `size` pixels; returns the (x, y) factors
    from full-size to decoded coordinates (1.0 when nothing was reduced)."""
    if img.format != "JPEG":
        return 1.0, 1.0
    full_w, full_h = img.size
    for s in _DRAFT_SCALES:
        if region[0] >= s * size[0] and region[1] >= s * size[1]:
            img.draft(mode, (full_w // s, full_h // s))
            return img.size[0] / full_w, img.size[1] / full_h
    return 1.0, 1.0


def _decode_rows(img: Image.Image, stop: float) -> None:
    """Decode only the top rows [0, ceil(stop)) of a not yet loaded baseline/progressive JPEG
    (the scanlines libjpeg returns first; each is final once returned, so these rows equal a
    full decode's); the rows below stay unset and must not be read. A no-op for other images
    or when every row is needed. A file truncated before `stop` raises, as PIL's `load`."""
    rows = math.ceil(stop)
    tile = getattr(img, "tile", None)  # encoded and not yet loaded: an ImageFile's tile
    if (img.format != "JPEG" or not tile or len(tile) != 1 or tile[0][0] != "jpeg"
            or rows >= img.size[1] or img.fp is None):
        return
    if not (hasattr(Image, "_getdecoder") and hasattr(img, "load_prepare")
            and hasattr(img, "decoderconfig")):  # Pillow internals moved: decode it all
        return
    name, _, offset, args = tile[0]
    img.load_prepare()
    decoder = Image._getdecoder(img.mode, name, args, img.decoderconfig)
    try:
        decoder.setimage(img.im, (0, 0, img.size[0], rows))
        img.fp.seek(offset)
        # libjpeg stops after `rows` scanlines and then reports the unread rest (n < 0);
        # n >= 0 means it asked for more data than the file holds.
        consumed, _ = decoder.decode(img.fp.read())
    finally:
        decoder.cleanup()
    img.tile = []
    if getattr(img, "_exclusive_fp", False):  # opened from a path: close it, as `load` does
        img.fp.close()
        img.fp = None
    if consumed >= 0:
        raise OSError("image file is truncated")


def _as_mode(img: Image.Image, mode: str) -> Image.Image:
    img = to_8bit(img)  # 16-bit grayscale: scaled, where PIL's convert clips to white
    return img if img.mode == mode else img.convert(mode)


def _to_array(img: Image.Image) -> np.ndarray:
    arr = np.asarray(img, np.uint8)
    return arr[..., None] if arr.ndim == 2 else arr


def _box_rows(box_bottom: float, box_height: float, out_height: int) -> float:
    """Rows of the source that PIL's bilinear `resize(..., box)` reads: its filter reaches
    0.5 + half a source-per-output step below the box (support 1 x the reduction factor)."""
    return box_bottom + 0.5 * max(box_height / out_height, 1.0) + 1.5


def resized_crop(img: Image.Image, top: int, left: int, height: int, width: int, size: int,
                 *, channels: int = 3, draft: bool = False) -> np.ndarray:
    """torchvision's `resized_crop` on a PIL image: crop (top, left, height, width), then
    resize to size x size, bilinear with PIL's antialiasing. With `draft`, a JPEG is decoded
    at reduced scale when the crop keeps at least `size` pixels (an approximation)."""
    return _to_array(_resized_crop_image(img, top, left, height, width, size, channels=channels,
                                         draft=draft))


def _resized_crop_image(img: Image.Image, top: int, left: int, height: int, width: int,
                        size: int, *, channels: int = 3, draft: bool = False) -> Image.Image:
    mode = _mode(channels)
    fx, fy = _draft(img, mode, (width, height), (size, size)) if draft else (1.0, 1.0)
    if (fx, fy) != (1.0, 1.0):
        box = (left * fx, top * fy, (left + width) * fx, (top + height) * fy)
        _decode_rows(img, _box_rows(box[3], box[3] - box[1], size))
        return _as_mode(img, mode).resize((size, size), Image.BILINEAR, box=box)
    _decode_rows(img, top + height)  # a crop reads nothing below its box
    crop = _as_mode(img, mode).crop((left, top, left + width, top + height))
    if crop.size != (size, size):
        crop = crop.resize((size, size), Image.BILINEAR)
    return crop


def resize_center_crop(img: Image.Image, resize: int, crop: int, *, channels: int = 3,
                       draft: bool = False) -> np.ndarray:
    """torchvision's `Resize(resize)` (shorter side, bilinear, antialiased) then
    `CenterCrop(crop)`, computing only the crop's pixels (one PIL resize with a `box`; equal
    to resize-then-crop within one uint8 level of rounding)."""
    mode = _mode(channels)
    full_w, full_h = img.size
    new_h, new_w = resized_size(full_h, full_w, resize)
    if new_h < crop or new_w < crop:  # torchvision zero-pads: do it the plain way
        img = _as_mode(img, mode)
        return center_crop(_to_array(img.resize((new_w, new_h), Image.BILINEAR)), crop)
    fx, fy = (_draft(img, mode, (full_w * crop / new_w, full_h * crop / new_h), (crop, crop))
              if draft else (1.0, 1.0))
    top, left = center_crop_anchor(new_h, new_w, crop)
    if (new_h, new_w) == (full_h, full_w):
        _decode_rows(img, top + crop)
        return _to_array(_as_mode(img, mode).crop((left, top, left + crop, top + crop)))
    sx, sy = full_w / new_w * fx, full_h / new_h * fy
    box = (left * sx, top * sy, (left + crop) * sx, (top + crop) * sy)
    _decode_rows(img, _box_rows(box[3], box[3] - box[1], crop))
    return _to_array(_as_mode(img, mode).resize((crop, crop), Image.BILINEAR, box=box))


def pad_random_crop(rng: random.Random, array: np.ndarray, padding: int) -> np.ndarray:
    """torchvision's `RandomCrop(size, padding)`: zero-pad by `padding` on every side and
    crop the original size at a uniform random offset (top, then left, in [0, 2 * padding])."""
    if not padding:
        return array
    top, left = rng.randrange(2 * padding + 1), rng.randrange(2 * padding + 1)
    return shifted(array, top - padding, left - padding)


def shifted(array: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """The window of `array`'s size at offset (dy, dx), zeros outside: a crop of the
    zero-padded image without building the padded copy."""
    h, w = array.shape[:2]
    out = np.zeros_like(array)
    y0, y1, x0, x1 = max(dy, 0), min(dy + h, h), max(dx, 0), min(dx + w, w)
    if y0 < y1 and x0 < x1:
        out[y0 - dy:y1 - dy, x0 - dx:x1 - dx] = array[y0:y1, x0:x1]
    return out


@dataclasses.dataclass(frozen=True)
class ImageTransform:
    """One example's host transform: decode, then (train) RandomResizedCrop or pad-and-crop
    and a horizontal flip, or (eval) Resize + CenterCrop; uint8 [size, size, channels] out
    (possibly a strided view: batching copies it anyway). Random draws come from a
    `random.Random` (cheap to seed per example: the pipeline seeds one per (seed, epoch,
    example)). Picklable, so grain ships it to its worker processes.

    size: output side (0: keep the decoded size); resize: the shorter side before the centre
    crop (eval, and train without RandomResizedCrop; 0: `size`)."""

    train: bool = False
    size: int = 0
    channels: int = 3
    random_resized_crop: bool = False
    scale: tuple[float, float] = IMAGENET_SCALE
    ratio: tuple[float, float] = IMAGENET_RATIO
    resize: int = 0
    crop_padding: int = 0
    flip: bool = False
    draft: bool = True

    def __post_init__(self) -> None:
        if self.random_resized_crop and not self.size:
            raise ConfigError(
                "RandomResizedCrop needs an output size: set config.data.image_size (e.g. 224)."
            )
        if not (0 < self.scale[0] <= self.scale[1] <= 1.0):
            raise ConfigError(f"RandomResizedCrop scale must satisfy 0 < lo <= hi <= 1; got "
                              f"{tuple(self.scale)}.")
        if not (0 < self.ratio[0] <= self.ratio[1]):
            raise ConfigError(f"RandomResizedCrop ratio must satisfy 0 < lo <= hi; got "
                              f"{tuple(self.ratio)}.")
        if self.resize and self.size and self.resize < self.size:
            raise ConfigError(f"the eval resize ({self.resize}) is smaller than the centre crop "
                              f"({self.size}); use resize >= image_size (e.g. 256 for 224).")

    @property
    def randomized(self) -> bool:
        """Whether the transform draws random numbers (a train transform that augments)."""
        return self.train and (self.random_resized_crop or self.crop_padding > 0 or self.flip)

    def __call__(self, image: Any, rng: random.Random | None = None) -> np.ndarray:
        """uint8 [H, W, C] from encoded bytes, a path, an array or a PIL image."""
        img = open_image(image)
        if self.train and self.random_resized_crop:
            assert rng is not None
            width, height = img.size
            top, left, h, w = random_resized_crop_params(rng, height, width, self.scale,
                                                         self.ratio)
            crop = _resized_crop_image(img, top, left, h, w, self.size, channels=self.channels,
                                       draft=self.draft)
            if self.flip and not self.crop_padding:
                # Flip the PIL image, as torchvision does: a negative-stride view costs ~6x
                # PIL's transpose when the batch is stacked (3-byte strided copies).
                if rng.random() < 0.5:
                    crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
                return _to_array(crop)
            out = _to_array(crop)
        elif self.size:
            out = resize_center_crop(img, self.resize or self.size, self.size,
                                     channels=self.channels, draft=self.draft)
        else:
            out = _to_array(_as_mode(img, _mode(self.channels)))
        if self.train and self.crop_padding:
            assert rng is not None
            out = pad_random_crop(rng, out, self.crop_padding)
        if self.train and self.flip:
            assert rng is not None
            if rng.random() < 0.5:  # torchvision: flip when rand < p
                out = out[:, ::-1]
        return out


def _pil_planes(image: Any) -> tuple[list[Any], bool]:
    """PIL images to resize: one RGB image (uint8 path: exactly torchvision on PIL) or, for
    float arrays in [0, 1], one mode-"F" image per channel. Returns (images, is_uint8)."""
    if isinstance(image, Image.Image) or not np.issubdtype(np.asarray(image).dtype, np.floating):
        return [Image.fromarray(load_image(image), "RGB")], True
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4) or 0 in array.shape:
        raise InputError(
            f"expected an image as a PIL image or an HWC array with 1, 3 or 4 channels; got "
            f"an array of shape {array.shape}. Batches: call the transform per image."
        )
    if not np.all(np.isfinite(array)):
        raise InputError("the image holds NaN or infinite values.")
    if array[..., :3].max(initial=0.0) > 1.0:  # floats on [0, 255], as jaxcnn.data.images
        array = array / 255.0
    array = np.clip(array.astype(np.float32), 0.0, 1.0)
    if array.shape[-1] == 4:  # transparent pixels become white, as in jaxcnn.data.images
        alpha = array[..., 3:]
        array = array[..., :3] * alpha + (1.0 - alpha)
    array = np.repeat(array, 3, axis=-1) if array.shape[-1] == 1 else array
    return [Image.fromarray(np.ascontiguousarray(array[..., c], np.float32), "F")
            for c in range(3)], False  # fmt: skip


@dataclasses.dataclass(frozen=True)
class EvalTransform:
    """Image (path, PIL image, or HWC array: uint8, or float in [0, 1]) -> float32
    [size[0], size[1], channels], normalized as (pixel - mean) / std on the [0, 255] scale.

    `resize_size` > 0: torchvision's `ImageClassification` (shorter side to `resize_size`
    with PIL's antialiased bilinear filter, then a centre crop of `size`), exact on PIL and
    uint8 input. `resize_size` = 0: a plain bilinear resize to `size`. One channel: ITU-R 601
    luma of the RGB image."""

    size: tuple[int, int]
    channels: int = 3
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (255.0,)
    resize_size: int = 0
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", tuple(int(s) for s in self.size))
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        if self.channels not in (1, 3) or len(self.mean) not in (1, self.channels) or len(
                self.std) not in (1, self.channels):
            raise InputError(
                f"an EvalTransform needs channels 1 or 3 and one mean/std value per channel; got "
                f"channels={self.channels}, mean={self.mean}, std={self.std}."
            )
        if self.interpolation != "bilinear":
            raise InputError(f"only bilinear interpolation is implemented; got "
                             f"{self.interpolation!r}.")

    def _stats(self) -> tuple[np.ndarray, np.ndarray]:
        shape = (self.channels,)
        return (np.broadcast_to(np.asarray(self.mean, np.float32), shape),
                np.broadcast_to(np.asarray(self.std, np.float32), shape))

    def __call__(self, image: ImageLike) -> np.ndarray:
        planes, is_uint8 = _pil_planes(image)
        width, height = planes[0].size
        out_h, out_w = self.size
        if self.resize_size:
            out_h, out_w = resized_size(height, width, self.resize_size)
        # PIL's BILINEAR filter scales its support with the reduction factor: the
        # antialiased bilinear torchvision applies to PIL images.
        resized = [im.resize((out_w, out_h), Image.BILINEAR) for im in planes]
        if is_uint8:
            array = np.asarray(resized[0], np.float32)
        else:
            array = 255.0 * np.stack([np.asarray(im, np.float32) for im in resized], axis=-1)
        if self.resize_size:
            array = center_crop(array, self.size)
        if self.channels == 1:
            array = array @ LUMA[:, None]
        mean, std = self._stats()
        return ((array - mean) / std).astype(np.float32)

    def batch(self, images: Sequence[ImageLike] | ImageLike) -> np.ndarray:
        """Images of any kind and size -> one float32 NHWC batch."""
        return np.stack([self(im) for im in as_image_list(images)])

    def normalize(self, images: np.ndarray) -> np.ndarray:
        """(x - mean) / std of a uint8 batch [N, H, W, C] already at `size` and `channels`
        (e.g. a training dataset's arrays)."""
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[1:] != (*self.size, self.channels):
            raise InputError(
                f"normalize expects [N, {self.size[0]}, {self.size[1]}, {self.channels}] images; "
                f"got {images.shape}. Call the EvalTransform on single images instead."
            )
        mean, std = self._stats()
        return (images.astype(np.float32) - mean) / std

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (stored in search indexes)."""
        return dataclasses.asdict(self)
