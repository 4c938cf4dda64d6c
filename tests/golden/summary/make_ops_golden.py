"""Write torchvision's published cost of each model jaxcnn converts weights for: the
`_ops` (GFLOPS, which torchvision counts as multiply-adds at 224x224, 299x299 for
inception) and `num_params` of its IMAGENET1K_V1 weights' `meta`. Needs torchvision only:

    /work/torchvenv/bin/python tests/golden/summary/make_ops_golden.py
"""

from __future__ import annotations

import json
from pathlib import Path

import torchvision

MODELS = [
    "alexnet", "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19",
    "vgg19_bn", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
    "wide_resnet50_2", "resnext50_32x4d", "googlenet", "mobilenet_v2",
]  # fmt: skip


def main() -> None:
    table = {}
    for name in MODELS:
        weights = torchvision.models.get_model_weights(name).IMAGENET1K_V1
        table[name] = {"gmacs": weights.meta["_ops"], "num_params": weights.meta["num_params"]}
    out = Path(__file__).resolve().parent / "torchvision_ops.json"
    out.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    print(f"torchvision {torchvision.__version__}: wrote {out}")


if __name__ == "__main__":
    main()
