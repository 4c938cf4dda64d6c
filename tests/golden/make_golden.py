"""Write the golden files that prove jaxcnn's converted torchvision weights reproduce
torchvision's eval-mode outputs. Needs torch + torchvision (not jaxcnn's test deps):

    /work/tvenv/bin/python tests/golden/make_golden.py          # rewrites tests/golden/*

For every converted model, `torchvision_keys.json` lists the state_dict names and shapes.
For the parity models, weights are drawn with `jaxcnn.pretrained.synthetic` (numpy only,
seeded by each parameter's name), torchvision runs in eval mode on inputs of several
resolutions, and `<model>.npz` stores input seeds, logits and a subsample of every stage
output (NHWC, like jaxcnn's `features()` dict). `preprocess.npz` records torchvision's
ImageNet transform of a small synthetic image.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image

HERE = Path(__file__).resolve().parent
# Import the numpy-only weight drawer without importing jaxcnn (and so jax).
_spec = importlib.util.spec_from_file_location(
    "synthetic", HERE.parents[1] / "jaxcnn" / "pretrained" / "synthetic.py"
)
synthetic = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(synthetic)

MODELS = [
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "wide_resnet50_2",
    "resnext50_32x4d", "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn",
    "vgg19", "vgg19_bn", "alexnet", "googlenet", "mobilenet_v2",
]  # fmt: skip

# Parity models: (H, W) resolutions (one not a multiple of 32) and, per jaxcnn stage name,
# the torchvision module whose output it is (None key "pre_logits": the head's input).
_RESNET_STAGES = {"stem": "maxpool", "stage1": "layer1", "stage2": "layer2",
                  "stage3": "layer3", "stage4": "layer4"}
PARITY = {
    "resnet18": ([(64, 64), (97, 83)], _RESNET_STAGES, "fc"),
    "resnet50": ([(97, 83)], _RESNET_STAGES, "fc"),  # resnet18 also covers 64x64
    "wide_resnet50_2": ([(64, 64)], _RESNET_STAGES, "fc"),
    "resnext50_32x4d": ([(64, 64)], _RESNET_STAGES, "fc"),
    "mobilenet_v2": (
        [(97, 83)],
        {"stem": "features.0", "stage1": "features.1", "stage2": "features.3",
         "stage3": "features.6", "stage4": "features.13", "stage5": "features.18"},
        "classifier",
    ),
    # VGG / AlexNet: 97x83 leaves a 3x2 map before the 7x7 / 6x6 adaptive pool (a non-square,
    # non-divisible case of both the pool and the CHW -> HWC permutation of the first FC).
    "vgg11": ([(64, 64), (97, 83)], "maxpools", "classifier.6"),
    "vgg11_bn": ([(64, 64)], "maxpools", "classifier.6"),  # vgg11 covers 97x83
    "alexnet": (
        [(64, 64), (97, 83)],
        {"stage1": "features.2", "stage2": "features.5", "stage3": "features.7",
         "stage4": "features.9", "stage5": "features.12"},
        "classifier.6",
    ),
    "googlenet": (
        [(64, 64), (97, 83)],
        {"stem": "maxpool2", **{f"inception{b}": f"inception{b}"
                                for b in ("3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b")}},
        "fc",
    ),
}
BATCH = 2
MAX_STAGE_VALUES = 1024


def build(name: str, *, pretrained_config: bool = True) -> torch.nn.Module:
    """The torchvision model, without downloading. GoogLeNet's pretrained configuration
    (what torchvision builds for IMAGENET1K_V1) drops the aux heads and transforms the input;
    its published file still holds the aux weights, so the key list is taken with them."""
    if name == "googlenet":
        return torchvision.models.googlenet(
            weights=None, aux_logits=not pretrained_config, transform_input=True,
            init_weights=False,
        )
    return torchvision.models.get_model(name, weights=None)


def _stage_modules(model: torch.nn.Module, stages: dict | str) -> dict[str, str]:
    if stages == "maxpools":  # VGG: stage k ends with the k-th max-pool of `features`
        pools = [f"features.{i}" for i, m in enumerate(model.features)
                 if isinstance(m, torch.nn.MaxPool2d)]
        return {f"stage{k + 1}": path for k, path in enumerate(pools)}
    return stages


def keys_and_shapes(model: torch.nn.Module) -> list[tuple[str, list[int]]]:
    return [(k, list(v.shape)) for k, v in model.state_dict().items()]


def subsample_index(size: int) -> np.ndarray:
    """Flat indices of the stored subsample of a stage output (the test recomputes them)."""
    return np.unique(np.linspace(0, size - 1, min(size, MAX_STAGE_VALUES)).astype(np.int64))


def golden_for(name: str, model: torch.nn.Module) -> dict[str, np.ndarray]:
    resolutions, stages, head = PARITY[name]
    stages = _stage_modules(model, stages)
    state = synthetic.synthetic_state_dict(keys_and_shapes(model))
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    model.eval()
    captured: dict[str, torch.Tensor] = {}
    modules = dict(model.named_modules())
    for stage, path in stages.items():
        modules[path].register_forward_hook(
            lambda m, i, o, stage=stage: captured.__setitem__(stage, o.clone())
        )
    modules[head].register_forward_pre_hook(
        lambda m, i: captured.__setitem__("pre_logits", i[0].clone())
    )
    out: dict[str, np.ndarray] = {}
    for seed, (h, w) in enumerate(resolutions):
        x = synthetic.synthetic_input(seed, (BATCH, 3, h, w))
        with torch.no_grad():
            logits = model(torch.from_numpy(x)).numpy()
        tag = f"{h}x{w}"
        out[f"{tag}/seed"] = np.array(seed)
        out[f"{tag}/logits"] = logits
        for stage, value in captured.items():
            v = value.numpy()
            if v.ndim == 4:
                v = v.transpose(0, 2, 3, 1)  # NCHW -> NHWC, jaxcnn's layout
            out[f"{tag}/{stage}/shape"] = np.array(v.shape)
            out[f"{tag}/{stage}/values"] = v.reshape(-1)[subsample_index(v.size)]
        captured.clear()
    return out


def preprocess_golden() -> dict[str, np.ndarray]:
    """torchvision's IMAGENET1K_V1 transform of `synthetic_image()` from a PIL image and from
    a float tensor, every 4th pixel (the test recomputes the image)."""
    img = synthetic.synthetic_image()
    t = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.transforms()
    from_pil = t(Image.fromarray(img)).numpy().transpose(1, 2, 0)
    from_tensor = t(torch.from_numpy(img).permute(2, 0, 1).float() / 255).numpy()
    return {"pil": from_pil[::4, ::4], "tensor": from_tensor.transpose(1, 2, 0)[::4, ::4]}


def main(names: list[str]) -> None:
    np.savez_compressed(HERE / "preprocess.npz", **preprocess_golden())
    torch.manual_seed(0)
    torch.set_num_threads(2)
    keys_file = HERE / "torchvision_keys.json"
    table = json.loads(keys_file.read_text()) if keys_file.exists() else {}
    for name in names:
        table[name] = keys_and_shapes(build(name, pretrained_config=False))
        model = build(name)
        if name in PARITY:
            np.savez_compressed(HERE / f"{name}.npz", **golden_for(name, model))
            print(f"{name}: golden written", flush=True)
    keys_file.write_text(json.dumps(table, indent=0, sort_keys=True) + "\n")
    print(f"torchvision {torchvision.__version__}, torch {torch.__version__}: wrote {HERE}")


if __name__ == "__main__":
    main(sys.argv[1:] or MODELS)
