"""Deterministic synthetic weights for parity tests, drawn with numpy alone from each
parameter's torchvision name and shape, so the golden-file script (run with torch) and the
tests (run without it) rebuild bit-identical state_dicts."""

from __future__ import annotations

import zlib
from collections.abc import Iterable

import numpy as np


def _rng(name: str, salt: int = 0) -> np.random.Generator:
    return np.random.default_rng([zlib.crc32(name.encode()), salt])


def synthetic_array(name: str, shape: tuple[int, ...]) -> np.ndarray:
    """One float32 array for the torchvision parameter `name` of `shape`.

    Scales keep deep eval-mode networks finite and O(1): conv and linear weights are
    He-normal (std sqrt(2 / fan_in)) so ReLU stacks neither explode nor vanish; BatchNorm
    running_var is positive (uniform [0.5, 1.5]), gamma near 1, beta and running_mean small;
    biases small. Every value still differs per name, so a misplaced key changes outputs."""
    shape = tuple(int(s) for s in shape)
    leaf = name.rsplit(".", 1)[-1]
    rng = _rng(name)
    if leaf == "running_var":
        return rng.uniform(0.5, 1.5, shape).astype(np.float32)
    if leaf == "running_mean":
        return (0.1 * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)
    if leaf == "num_batches_tracked":
        return np.zeros(shape, np.int64)
    if leaf == "weight" and len(shape) == 1:  # BatchNorm gamma
        return rng.uniform(0.7, 1.2, shape).astype(np.float32)
    if leaf == "bias":
        return (0.05 * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    std = np.float32(np.sqrt(2.0 / fan_in))
    out = rng.standard_normal(shape, dtype=np.float32)
    out *= std
    return out


def synthetic_state_dict(keys_and_shapes: Iterable[tuple[str, tuple[int, ...]]]) -> dict:
    """{name: synthetic_array(name, shape)} for every (name, shape)."""
    return {name: synthetic_array(name, shape) for name, shape in keys_and_shapes}


def synthetic_input(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    """A float32 NCHW input batch: standard normal, like normalized ImageNet pixels."""
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


def synthetic_image(height: int = 220, width: int = 300) -> np.ndarray:
    """A uint8 RGB test pattern (gradients, XOR texture and noise) for preprocessing tests."""
    yy, xx = np.mgrid[0:height, 0:width]
    img = np.stack(
        [xx * 255 // (width - 1), yy * 255 // (height - 1), (xx ^ yy) & 255], axis=-1
    )
    noise = np.random.default_rng(0).integers(-20, 21, img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def synthetic_photo(seed: int, height: int, width: int) -> np.ndarray:
    """A float32 HWC image in [0, 1] with structure at several scales (random plane waves per
    channel plus fine noise), for detector parity tests."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.full((height, width, 3), 0.5, np.float32)
    for _ in range(4):
        freq = rng.uniform(0.01, 0.15, (2, 3)).astype(np.float32)
        phase = rng.uniform(0, 2 * np.pi, 3).astype(np.float32)
        img += 0.12 * np.sin(yy[..., None] * freq[0] + xx[..., None] * freq[1] + phase)
    img += rng.uniform(-0.05, 0.05, img.shape).astype(np.float32)
    return np.clip(img, 0.0, 1.0).astype(np.float32)
