"""The weights registry: torchvision's ImageNet-1K checkpoints for the converted models and its
COCO detection checkpoints (`DetectionWeights`), with the metadata of torchvision's
multi-weight API (`Weights.url`, `.meta`, `.transforms()`).
Mean and std are on jaxcnn's [0, 255] pixel scale (torchvision's values x 255).

URLs, accuracies and parameter counts are copied from torchvision 0.29
(`torchvision.models.get_model_weights(name).<WEIGHTS>.url / .meta`); the sha256 prefix is
the hex part of the file name, which torchvision's hub also checks."""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import functools
import re
from importlib import resources
from typing import TYPE_CHECKING, Any

from jaxcnn.data.transforms import IMAGENET_MEAN, IMAGENET_STD, EvalTransform
from jaxcnn.errors import UnknownModelError

if TYPE_CHECKING:
    from jaxcnn.detection.transform import RCNNTransform

_HASH_REGEX = re.compile(r"-([a-f0-9]*)\.")  # torchvision.hub's HASH_REGEX


class _Published:
    """What every published file has: a `url` whose file name carries its sha256 prefix."""

    @property
    def filename(self) -> str:
        """The file name of the download (also its name in the cache directory)."""
        return self.url.rsplit("/", 1)[-1]

    @property
    def sha256_prefix(self) -> str:
        """The leading hex digits of the file's sha256, taken from its name."""
        match = _HASH_REGEX.search(self.filename)
        assert match, self.filename
        return match.group(1)


@dataclasses.dataclass(frozen=True)
class Weights(_Published):
    """One published checkpoint and the evaluation recipe it was measured with."""

    model: str
    name: str
    url: str
    acc1: float  # ImageNet-1K top-1 accuracy (%) published by torchvision
    acc5: float
    num_params: int
    resize_size: int
    crop_size: int
    recipe: str
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    @property
    def metric(self) -> float:
        """The headline number "DEFAULT" maximizes (top-1 accuracy)."""
        return self.acc1

    @property
    def summary(self) -> str:
        """The published metrics in one line (`jaxcnn weights`)."""
        return f"acc@1 {self.acc1:6.3f}  acc@5 {self.acc5:6.3f}"

    @property
    def meta(self) -> dict[str, Any]:
        """torchvision-style metadata: categories, num_params, metrics, recipe, transforms."""
        return {
            "categories": imagenet_categories(),
            "num_params": self.num_params,
            "recipe": self.recipe,
            "_metrics": {"ImageNet-1K": {"acc@1": self.acc1, "acc@5": self.acc5}},
            "resize_size": self.resize_size,
            "crop_size": self.crop_size,
            "interpolation": "bilinear",
            "antialias": True,
            "mean": self.mean,
            "std": self.std,
        }

    def transforms(self) -> EvalTransform:
        """The evaluation transform these weights expect (torchvision's ImageClassification:
        image -> normalized float32 HWC)."""
        return EvalTransform((self.crop_size, self.crop_size), 3, self.mean, self.std,
                         resize_size=self.resize_size)


@dataclasses.dataclass(frozen=True)
class DetectionWeights(_Published):
    """One published detector checkpoint (torchvision's COCO weights). The images it expects:
    float [0, 1] (torchvision's `ObjectDetection` transform); the model resizes and normalizes
    them itself (its `transform`)."""

    model: str
    name: str
    url: str
    box_map: float  # COCO-val2017 box mAP (%) published by torchvision
    num_params: int
    recipe: str

    @property
    def metric(self) -> float:
        """The headline number "DEFAULT" maximizes (box mAP)."""
        return self.box_map

    @property
    def summary(self) -> str:
        """The published metric in one line (`jaxcnn weights`)."""
        return f"box mAP {self.box_map:5.1f} (COCO val2017)"

    @property
    def meta(self) -> dict[str, Any]:
        """torchvision-style metadata: categories, num_params, metrics, recipe."""
        return {
            "categories": coco_categories(),
            "num_params": self.num_params,
            "recipe": self.recipe,
            "_metrics": {"COCO-val2017": {"box_map": self.box_map}},
            "min_size": (1, 1),
        }

    def transforms(self) -> RCNNTransform:
        """The resize / normalize / pad of the model these weights were trained in
        (torchvision's GeneralizedRCNNTransform defaults: 800 / 1333, ImageNet mean and std
        on the [0, 1] scale), which `jaxcnn.detection.detect` applies."""
        from jaxcnn.models import create_model

        return create_model(self.model).transform


def _entry(model: str, name: str, url: str, acc1: float, acc5: float, num_params: int,
           resize_size: int, crop_size: int, recipe: str) -> Weights:  # fmt: skip
    return Weights(model, name, url, acc1, acc5, num_params, resize_size, crop_size, recipe)


# fmt: off
WEIGHTS: tuple[Weights | DetectionWeights, ...] = (
    _entry("resnet18", "IMAGENET1K_V1", "https://download.pytorch.org/models/resnet18-f37072fd.pth",
           69.758, 89.078, 11689512, 256, 224,
           "https://github.com/pytorch/vision/tree/main/references/classification#resnet"),
    _entry("resnet34", "IMAGENET1K_V1", "https://download.pytorch.org/models/resnet34-b627a593.pth",
           73.314, 91.42, 21797672, 256, 224,
           "https://github.com/pytorch/vision/tree/main/references/classification#resnet"),
    _entry("resnet50", "IMAGENET1K_V1", "https://download.pytorch.org/models/resnet50-0676ba61.pth",
           76.13, 92.862, 25557032, 256, 224,
           "https://github.com/pytorch/vision/tree/main/references/classification#resnet"),
    _entry("resnet50", "IMAGENET1K_V2", "https://download.pytorch.org/models/resnet50-11ad3fa6.pth",
           80.858, 95.434, 25557032, 232, 224,
           "https://github.com/pytorch/vision/issues/3995#issuecomment-1013906621"),
    _entry("resnet101", "IMAGENET1K_V1", "https://download.pytorch.org/models/resnet101-63fe2227.pth",
           77.374, 93.546, 44549160, 256, 224,
           "https://github.com/pytorch/vision/tree/main/references/classification#resnet"),
    _entry("resnet101", "IMAGENET1K_V2", "https://download.pytorch.org/models/resnet101-cd907fc2.pth",
           81.886, 95.78, 44549160, 232, 224,
           "https://github.com/pytorch/vision/issues/3995#new-recipe"),
    _entry("resnet152", "IMAGENET1K_V1", "https://download.pytorch.org/models/resnet152-394f9c45.pth",
           78.312, 94.046, 60192808, 256, 224,
           "https://github.com/pytorch/vision/tree/main/references/classification#resnet"),
    _entry("resnet152", "IMAGENET1K_V2", "https://download.pytorch.org/models/resnet152-f82ba261.pth",
           82.284, 96.002, 60192808, 232, 224,
           "https://github.com/pytorch/vision/issues/3995#new-recipe"),
    _entry("wide_resnet50_2", "IMAGENET1K_V1", "https://download.pytorch.org/models/wide_resnet50_2-95faca4d.pth",
           78.468, 94.086, 68883240, 256, 224,
           "https://github.com/pytorch/vision/pull/912#issue-445437439"),
    _entry("wide_resnet50_2", "IMAGENET1K_V2", "https://download.pytorch.org/models/wide_resnet50_2-9ba9bcbe.pth",
           81.602, 95.758, 68883240, 232, 224,
           "https://github.com/pytorch/vision/issues/3995#new-recipe-with-fixres"),
    _entry("resnext50_32x4d", "IMAGENET1K_V1", "https://download.pytorch.org/models/resnext50_32x4d-7cdf4587.pth",
           77.618, 93.698, 25028904, 256, 224,
           "https://github.com/pytorch/vision/tree/main/references/classification#resnext"),
    _entry("resnext50_32x4d", "IMAGENET1K_V2", "https://download.pytorch.org/models/resnext50_32x4d-1a0047aa.pth",
           81.198, 95.34, 25028904, 232, 224,
           "https://github.com/pytorch/vision/issues/3995#new-recipe"),
    _entry("vgg11", "IMAGENET1K_V1", "https://download.pytorch.org/models/vgg11-8a719046.pth",
           69.02, 88.628, 132863336, 256, 224,
           "https://github.com/pytorch/vision/tree/main/references/classification#alexnet-and-vgg"),
    _entry("vgg11_bn", "IMAGENET1K_V1", "https://download.pytorch.org/models/vgg11_bn-6002323d.pth",
           70.37, 89.81, 132868840, 256, 224,
           "https://github.com/pytorch/vision/tree/main/references/classification#alexnet-and-vgg"),
    _entry("vgg13", "IMAGENET1K_V1", "https://download.pytorch.org/models/vgg13-19584684.pth",
           69.928, 89.246, 133047848, 256, 224,
           "https://github.com/pytorch/vision/tree/main/references/classification#alexnet-and-vgg"),
    _entry("vgg13_bn", "IMAGENET1K_V1", "https://download.pytorch.org/models/vgg13_bn-abd245e5.pth",
           71.586, 90.374, 133053736, 256, 224,
           "https://github.com/pytorch/vision/tree/main/references/classification#alexnet-and-vgg"),
    _entry("vgg16", "IMAGENET1K_V1", "https://download.pytorch.org/models/vgg16-397923af.pth",
           71.592, 90.382, 138357544, 256, 224,
           "https://github.com/pytorch/vision/tree/main/references/classification#alexnet-and-vgg"),
    _entry("vgg16_bn", "IMAGENET1K_V1", "https://download.pytorch.org/models/vgg16_bn-6c64b313.pth",
           73.36, 91.516, 138365992, 256, 224,
           "https://github.com/pytorch/vision/tree/main/references/classification#alexnet-and-vgg"),
    _entry("vgg19", "IMAGENET1K_V1", "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
           72.376, 90.876, 143667240, 256, 224,
           "https://github.com/pytorch/vision/tree/main/references/classification#alexnet-and-vgg"),
    _entry("vgg19_bn", "IMAGENET1K_V1", "https://download.pytorch.org/models/vgg19_bn-c79401a0.pth",
           74.218, 91.842, 143678248, 256, 224,
           "https://github.com/pytorch/vision/tree/main/references/classification#alexnet-and-vgg"),
    _entry("alexnet", "IMAGENET1K_V1", "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
           56.522, 79.066, 61100840, 256, 224,
           "https://github.com/pytorch/vision/tree/main/references/classification#alexnet-and-vgg"),
    _entry("googlenet", "IMAGENET1K_V1", "https://download.pytorch.org/models/googlenet-1378be20.pth",
           69.778, 89.53, 6624904, 256, 224,
           "https://github.com/pytorch/vision/tree/main/references/classification#googlenet"),
    _entry("mobilenet_v2", "IMAGENET1K_V1", "https://download.pytorch.org/models/mobilenet_v2-b0353104.pth",
           71.878, 90.286, 3504872, 256, 224,
           "https://github.com/pytorch/vision/tree/main/references/classification#mobilenetv2"),
    _entry("mobilenet_v2", "IMAGENET1K_V2", "https://download.pytorch.org/models/mobilenet_v2-7ebf99e0.pth",
           72.154, 90.822, 3504872, 232, 224,
           "https://github.com/pytorch/vision/issues/3995#new-recipe-with-reg-tuning"),
    DetectionWeights("fasterrcnn_resnet50_fpn", "COCO_V1", "https://download.pytorch.org/models/fasterrcnn_resnet50_fpn_coco-258fb6c6.pth",
                     37.0, 41755286,
                     "https://github.com/pytorch/vision/tree/main/references/detection#faster-r-cnn-resnet-50-fpn"),
)
# fmt: on

_BY_KEY = {(w.model, w.name): w for w in WEIGHTS}


def list_weights(pattern: str | None = None) -> list[str]:
    """Sorted "model.WEIGHTS" names, optionally filtered by a glob on the model name."""
    names = sorted({w.model for w in WEIGHTS})
    if pattern is not None:
        names = fnmatch.filter(names, pattern)
    return [f"{w.model}.{w.name}" for n in names for w in WEIGHTS if w.model == n]


def get_weights(model: str, weights: str = "IMAGENET1K_V1") -> Weights | DetectionWeights:
    """The registry entry `weights` of `model`; "DEFAULT" is the most accurate one, as in
    torchvision. Unknown names raise UnknownModelError listing what exists."""
    available = [w for w in WEIGHTS if w.model == model]
    if not available:
        close = difflib.get_close_matches(model, sorted({w.model for w in WEIGHTS}), n=5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise UnknownModelError(
            f"No torchvision weights are registered for model {model!r}.{hint} Models with "
            f"weights: jaxcnn.pretrained.list_weights()."
        )
    if weights == "DEFAULT":
        return max(available, key=lambda w: w.metric)
    try:
        return _BY_KEY[(model, weights)]
    except KeyError:
        names = ", ".join(w.name for w in available)
        raise UnknownModelError(
            f"{model} has no weights {weights!r}; available: {names} (or DEFAULT)."
        ) from None


@functools.cache
def imagenet_categories() -> tuple[str, ...]:
    """The 1000 ImageNet-1K class names in torchvision's order (`_IMAGENET_CATEGORIES`)."""
    text = resources.files("jaxcnn.pretrained").joinpath("imagenet_classes.txt").read_text()
    names = tuple(line for line in text.splitlines() if line)
    assert len(names) == 1000, len(names)
    return names


@functools.cache
def coco_categories() -> tuple[str, ...]:
    """The 91 COCO category names of torchvision's detection weights, index 0 "__background__"
    and "N/A" for the ids COCO leaves unused (`_COCO_CATEGORIES`)."""
    text = resources.files("jaxcnn.pretrained").joinpath("coco_categories.txt").read_text()
    names = tuple(line for line in text.splitlines() if line)
    assert len(names) == 91, len(names)
    return names
