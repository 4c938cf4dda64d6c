"""The one image module: reading image files, PIL images or arrays into uint8 HWC arrays
(RGB, or luma for one channel), resizing, and listing image files, with errors that name the
file that could not be read. Used by the folder and tfds sources, the `EvalTransform` of
`jaxcnn.data.transforms`, similarity and `jaxcnn.predict`.

`IMAGE_EXTENSIONS` is torchvision's `IMG_EXTENSIONS` (`torchvision/datasets/folder.py`): a
folder of images is the same set of files whether it is trained on (`load_folder`) or
indexed (`jaxcnn index`). GIF is left out, as torchvision does: an animated GIF is many
images, and PIL would silently keep the first frame."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxcnn.errors import DatasetError, InputError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

ImageLike = Any  # str | os.PathLike | PIL.Image.Image | np.ndarray


def describe(image: ImageLike) -> str:
    """A short name for an image in messages and tables (its path, or its kind and shape)."""
    if isinstance(image, str | os.PathLike):
        return str(image)
    if hasattr(image, "size") and hasattr(image, "mode"):
        return f"PIL image {image.size[0]}x{image.size[1]} {image.mode}"
    return f"array {getattr(image, 'shape', '?')}"


def _array_to_rgb(arr: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4) or 0 in arr.shape:
        raise InputError(
            f"{name}: an image array must be [H, W], [H, W, 1], [H, W, 3] or [H, W, 4] (HWC); "
            f"got shape {arr.shape}. Pass one image at a time, channels last."
        )
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)):
            raise InputError(f"{name}: the image holds NaN or infinite values.")
        # Floats in [0, 1] are the skimage/matplotlib convention; anything larger is [0, 255].
        scale = 255.0 if arr.max(initial=0.0) <= 1.0 else 1.0
        arr = np.clip(np.round(arr * scale), 0, 255).astype(np.uint8)
    elif arr.dtype != np.uint8:
        if arr.min() < 0 or arr.max() > 255:
            raise InputError(
                f"{name}: integer images must lie in [0, 255]; got dtype {arr.dtype} with range "
                f"[{arr.min()}, {arr.max()}]. Rescale to uint8 first."
            )
        arr = arr.astype(np.uint8)
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    elif arr.shape[-1] == 4:
        arr = _composite_on_white(arr)
    return np.ascontiguousarray(arr)


def _composite_on_white(rgba: np.ndarray) -> np.ndarray:
    # Transparent pixels become white, as browsers show them, rather than their hidden RGB.
    alpha = rgba[..., 3:].astype(np.float32) / 255.0
    rgb = rgba[..., :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


def read_image(path: str | os.PathLike, channels: int = 3) -> tuple[np.ndarray, str]:
    """(uint8 [H, W, channels], the file's PIL mode) of an image file: RGB, or luma for one
    channel; transparency composited on white. An unreadable or corrupt file raises
    DatasetError naming it (the PIL error as its cause)."""
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"no image file at {str(path)!r}; check the path.")
    try:
        with Image.open(path) as img:
            img.load()
            return _pil_to_array(img, channels), img.mode
    except Exception as err:  # PIL raises many types for truncated or corrupt files
        raise DatasetError(
            f"cannot read image {str(path)!r} ({type(err).__name__}: {err}); the file is "
            "corrupt or not an image. Remove or replace it."
        ) from err


def load_image(image: ImageLike) -> np.ndarray:
    """One image as uint8 RGB [H, W, 3]. Accepts a file path, a PIL image or an array ([H, W],
    [H, W, 1|3|4]; floats in [0, 1] or [0, 255]); grayscale is repeated to three channels and
    RGBA composited on white. Unreadable or corrupt files raise DatasetError naming the file."""
    from PIL import Image

    if isinstance(image, str | os.PathLike):
        return read_image(image)[0]
    if isinstance(image, Image.Image):
        return _pil_to_array(image, 3)
    return _array_to_rgb(np.asarray(image), describe(image))


def to_8bit(img: Any) -> Any:
    """A 16-bit grayscale PIL image (modes I;16, I;16B, ..., or I holding 0..65535, as 16-bit
    PNG and TIFF files open) scaled to 8 bits ("L", v / 257 rounded): PIL's own convert
    clips every value above 255 to white. Other images are returned unchanged."""
    from PIL import Image

    if not (img.mode.startswith("I;16") or img.mode == "I"):
        return img
    arr = np.asarray(img).astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() > 65535):
        raise DatasetError(
            f"a 32-bit integer image ({img.mode}) with values in [{arr.min()}, {arr.max()}]; "
            "jaxcnn reads 8- and 16-bit images. Save it as 8- or 16-bit PNG/TIFF."
        )
    return Image.fromarray(((arr * 255 + 32767) // 65535).astype(np.uint8), mode="L")


def _pil_to_array(img: Any, channels: int) -> np.ndarray:
    from PIL import Image

    img = to_8bit(img)
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgb = _composite_on_white(np.asarray(img.convert("RGBA")))
        if channels == 3:
            return rgb
        img = Image.fromarray(rgb, "RGB")
    if channels == 1:
        return np.asarray(img.convert("L"), np.uint8)[..., None]
    return np.asarray(img.convert("RGB"), np.uint8)


def resize(image: np.ndarray, size: tuple[int, int] | int) -> np.ndarray:
    """uint8 [H, W, C] (C = 1 or 3) -> [size[0], size[1], C] with PIL's antialiased
    bilinear filter (the filter torchvision applies to PIL images)."""
    from PIL import Image

    h, w = (size, size) if isinstance(size, int) else size
    if image.shape[:2] == (h, w):
        return image
    plane = image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image
    out = np.asarray(Image.fromarray(plane).resize((w, h), Image.BILINEAR), np.uint8)
    return out[..., None] if out.ndim == 2 else out


def square_resize(image: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop uint8 [H, W, C] to a square and resize it to `size` x `size`; identity
    when `size` is 0."""
    if not size:
        return image
    image = image[..., None] if image.ndim == 2 else image
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return resize(image[top:top + side, left:left + side], size)


def load_images(images: Sequence[ImageLike] | ImageLike, size: tuple[int, int] | int
                ) -> np.ndarray:
    """Several images resized to one `size` (H, W), stacked: uint8 [N, H, W, 3]. A single
    4-D array [N, H, W, C] is taken as a batch."""
    if isinstance(size, int):
        size = (size, size)
    return np.stack([resize(load_image(im), size) for im in as_image_list(images)])


def as_image_list(images: Any) -> list[ImageLike]:
    """A list of single images from a list, a path, a PIL image or an [N, H, W, C] array."""
    if isinstance(images, np.ndarray) or hasattr(images, "__array__") and not isinstance(
        images, list | tuple
    ):
        arr = np.asarray(images)
        if arr.ndim == 4:
            return list(arr)
        return [arr]
    if isinstance(images, str | os.PathLike) or hasattr(images, "mode"):
        return [images]
    images = list(images)
    if not images:
        raise InputError("got an empty list of images; pass at least one.")
    return images


def list_images(directory: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """Image files under `directory` (by extension), sorted, so runs see the same order."""
    root = Path(directory)
    if not root.is_dir():
        raise DatasetError(f"{str(root)!r} is not a directory of images.")
    pattern: Iterable[Path] = root.rglob("*") if recursive else root.iterdir()
    files = sorted(p for p in pattern if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise DatasetError(
            f"no image files ({', '.join(IMAGE_EXTENSIONS)}) under {str(root)!r}."
        )
    return files
