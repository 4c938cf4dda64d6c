"""Write tests/golden/transforms.npz: torchvision `transforms.v2` outputs that jaxcnn's host
transforms (jaxcnn/data/transforms.py) must reproduce. Needs torch + torchvision, not jaxcnn:

    /work/torchvenv/bin/python tests/golden/make_transforms_golden.py

Synthetic images (stored as PNG bytes, so decoding is lossless and the same everywhere) go
through torchvision's RandomResizedCrop kernel with crop parameters drawn by torchvision
itself, its Resize(shorter side) + CenterCrop, and its RandomCrop(padding) kernel, each on
the PIL image (the classic ImageFolder path) and on the uint8 tensor (antialiased torch
kernels). `rrc_params_*` are samples of `RandomResizedCrop.make_params` for the sampler's
distribution test, and the fallback cases are images no crop of the scale range fits."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

HERE = Path(__file__).resolve().parent

# (height, width, mode) of the synthetic images; one grayscale, one tall and thin.
IMAGES = [(97, 131, "RGB"), (180, 240, "RGB"), (120, 160, "L"), (240, 40, "RGB")]
RRC_SIZES = (48, 64, 96, 32)  # output side per image
EVAL = [(0, 110, 96), (1, 73, 64), (2, 128, 112), (3, 40, 32), (1, 64, 80)]  # image, resize, crop
FALLBACK = [((20, 400), (0.9, 1.0)), ((400, 20), (0.9, 1.0)), ((100, 110), (0.999, 1.0))]


def synthetic(height: int, width: int, mode: str, seed: int) -> bytes:
    """A smooth gradient plus texture and noise, PNG-encoded."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    channels = []
    for c in range(3 if mode == "RGB" else 1):
        f = rng.uniform(0.02, 0.2, size=2)
        base = 127 + 80 * np.sin(f[0] * x + c) * np.cos(f[1] * y - c)
        channels.append(base + rng.normal(0, 25, size=(height, width)))
    arr = np.clip(np.stack(channels, -1), 0, 255).astype(np.uint8)
    img = Image.fromarray(arr[..., 0] if mode == "L" else arr, mode)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def as_tensor(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).contiguous()


def hwc(x) -> np.ndarray:
    if isinstance(x, Image.Image):
        return np.asarray(x, np.uint8)
    return x.permute(1, 2, 0).numpy().astype(np.uint8)


def main() -> None:
    torch.manual_seed(0)
    out: dict[str, np.ndarray] = {"torchvision_version": np.array(torchvision.__version__)}
    for i, ((h, w, mode), size) in enumerate(zip(IMAGES, RRC_SIZES, strict=True)):
        png = synthetic(h, w, mode, seed=i)
        out[f"png_{i}"] = np.frombuffer(png, np.uint8)
        img = Image.open(io.BytesIO(png)).convert("RGB")  # torchvision's pil_loader
        rrc = v2.RandomResizedCrop(size)
        params = np.array([list(rrc.make_params([img]).values()) for _ in range(3)], np.int64)
        out[f"rrc_params_{i}"] = params  # (top, left, height, width)
        out[f"rrc_pil_{i}"] = np.stack([hwc(F.resized_crop(img, *p, [size, size])) for p in params])
        out[f"rrc_tensor_{i}"] = np.stack([hwc(F.resized_crop(as_tensor(img), *p, [size, size],
                                                               antialias=True)) for p in params])
        if i not in (0, 3):
            continue
        # RandomCrop(size, padding=4) + the flip kernel, from fixed offsets.
        offsets = np.array([[0, 0], [8, 8], [3, 5]], np.int64)
        padded = F.pad(img, [4, 4, 4, 4], fill=0)
        out[f"padcrop_offsets_{i}"] = offsets
        out[f"padcrop_flip_{i}"] = np.stack([hwc(F.horizontal_flip(F.crop(padded, top, left, h, w)))
                                             for top, left in offsets])
    for k, (i, resize, crop) in enumerate(EVAL):
        img = Image.open(io.BytesIO(out[f"png_{i}"].tobytes())).convert("RGB")
        t = v2.Compose([v2.Resize(resize), v2.CenterCrop(crop)])
        out[f"eval_case_{k}"] = np.array([i, resize, crop])
        out[f"eval_pil_{k}"] = hwc(t(img))
        out[f"eval_tensor_{k}"] = hwc(t(as_tensor(img)))
    for name, (h, w) in (("500x375", (375, 500)), ("64x480", (480, 64))):
        rrc = v2.RandomResizedCrop(224)
        dummy = Image.new("RGB", (w, h))
        out[f"rrc_samples_{name}"] = np.array(
            [list(rrc.make_params([dummy]).values()) for _ in range(4000)], np.int16)
    for k, ((h, w), scale) in enumerate(FALLBACK):
        rrc = v2.RandomResizedCrop(32, scale=scale)
        out[f"fallback_case_{k}"] = np.array([h, w, *scale], np.float64)
        out[f"fallback_params_{k}"] = np.array(
            list(rrc.make_params([Image.new("RGB", (w, h))]).values()), np.int64)
    np.savez_compressed(HERE / "transforms.npz", **out)
    print(f"wrote {HERE / 'transforms.npz'} ({(HERE / 'transforms.npz').stat().st_size} bytes)")


if __name__ == "__main__":
    main()
