"""Where a model's variables come from, in one place: a weights registry tag ("DEFAULT",
"IMAGENET1K_V1"), a weight file or directory (.msgpack, .pth, .safetensors, `jaxcnn convert`
output), or a training workdir (its best checkpoint and the facts its run recorded). Each
comes with what using it needs, as torchvision's `Weights` and timm's `pretrained_cfg` do:
the model options the weights were trained with, the head size, the evaluation `EvalTransform`
and the class names. `load_model` is the timm/torchvision-style entry point on top."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from jaxcnn.data.transforms import IMAGENET_MEAN, IMAGENET_STD, EvalTransform
from jaxcnn.errors import CheckpointError, UnknownModelError
from jaxcnn.models import create_model, get_model_spec
from jaxcnn.rundir import RunDir, is_run_dir


@dataclasses.dataclass
class LoadedWeights:
    """Variables plus how to use them."""

    model_name: str
    variables: dict[str, Any]
    model_kwargs: dict[str, Any]  # create_model options the weights need (num_classes, ...)
    transform: Any  # what the weights expect: an EvalTransform (a detector: its RCNNTransform)
    class_names: tuple[str, ...]
    source: str  # for messages and reports, e.g. "runs/d (step 675)"
    weights_id: str  # for indexes: a registry tag verbatim, an absolute path otherwise

    def model(self, **overrides: Any) -> Any:
        """`create_model` with the options these weights need (`overrides` win)."""
        return create_model(self.model_name, **{**self.model_kwargs, **overrides})


def weights_id(weights: str | os.PathLike | None) -> str:
    """How weights are recorded (search indexes): absolute for files and workdirs, so a
    search from another directory finds them; verbatim for registry tags."""
    if weights is None:
        return ""
    path = Path(weights).expanduser()
    return str(path.resolve()) if path.exists() else str(weights)


def default_transform(model_name: str) -> EvalTransform:
    """The transform of the model's registered weights when it has some, else ImageNet's
    evaluation transform (shorter side to 256/224 of the input, centre crop, ImageNet
    mean/std) for models whose canonical input is at least 64 pixels, and a plain resize
    with [0, 1] scaling for small-input models (LeNet, CIFAR stems), as the default
    training config does."""
    from jaxcnn.pretrained import get_weights

    try:
        return get_weights(model_name, "DEFAULT").transforms()
    except UnknownModelError:
        pass
    h, w, c = get_model_spec(model_name).input_shape
    if min(h, w) >= 64 and c == 3:
        return EvalTransform((h, w), c, IMAGENET_MEAN, IMAGENET_STD,
                         resize_size=round(h * 256 / 224))
    return EvalTransform((h, w), c)


def _head_size(model_name: str, variables: dict[str, Any]) -> int | None:
    """The number of classes of a classifier's variables, from its head's kernel."""
    head = getattr(create_model(model_name), "head_name", None)
    node = variables.get("params", {})
    for part in (head.split("/") if head else ()):  # a nested head: "box_predictor/cls_score"
        node = node.get(part, {})
    kernel = node.get("kernel") if head else None
    return None if kernel is None else int(kernel.shape[-1])


def _from_run_dir(path: Path, model_name: str | None) -> LoadedWeights:
    run = RunDir(path)
    info = run.info()
    if model_name and model_name != info["model"]:
        raise CheckpointError(
            f"{run.path} trained {info['model']!r}, not {model_name!r}: use --model "
            f"{info['model']} (or leave --model out)."
        )
    step, variables = run.variables()
    h, w, c = info["input_shape"]
    transform = EvalTransform((h, w), c, tuple(info["mean"]), tuple(info["std"]))
    return LoadedWeights(info["model"], variables, dict(info["model_kwargs"]), transform,
                         tuple(info.get("class_names", ())), f"{run.path} (step {step})",
                         str(run.path))


def _converted_transform(directory: Path) -> EvalTransform | None:
    """The transform recorded by `jaxcnn convert` in DIR/meta.json."""
    meta_file = directory / "meta.json"
    if not meta_file.is_file():
        return None
    t = json.loads(meta_file.read_text()).get("transforms")
    if not t:
        return None
    return EvalTransform((t["crop_size"], t["crop_size"]), 3, tuple(t["mean"]), tuple(t["std"]),
                     resize_size=t["resize_size"])


def load_weights(model_name: str | None, weights: str | os.PathLike) -> LoadedWeights:
    """Variables for `model_name` from `weights`: a training workdir (its best checkpoint;
    `model_name` may be None, the run says), a weight file or directory (.msgpack, .pth,
    .safetensors, `jaxcnn convert` output), or a registry tag of the model ("DEFAULT",
    "IMAGENET1K_V1"), with the options, transform and class names that go with them."""
    path = Path(weights).expanduser()
    if is_run_dir(path):
        return _from_run_dir(path, model_name)
    if model_name is None:
        raise CheckpointError(
            f"{weights!r} is not a training workdir, so the model it belongs to is unknown: "
            "pass --model NAME."
        )
    from jaxcnn import pretrained
    from jaxcnn.pretrained.torchvision import RULES

    rule = RULES.get(model_name)
    kwargs = dict(rule.model_kwargs) if rule else {}
    names: tuple[str, ...] = ()
    if path.exists():
        variables = dict(pretrained.load(model_name, path=path))
        transform = (_converted_transform(path) if path.is_dir() else None) or (
            default_transform(model_name))
        tag = str(path)
    else:
        tag = str(weights)
        entry = pretrained.get_weights(model_name, tag)  # UnknownModelError lists the tags
        variables = dict(pretrained.load(model_name, entry.name))
        transform, tag = entry.transforms(), entry.name
    n = _head_size(model_name, variables)
    if n is not None and n != get_model_spec(model_name).num_classes:
        kwargs["num_classes"] = n
    torchvision_file = path.suffix in (".pth", ".pt", ".bin", ".safetensors") or (
        path.is_dir() and (path / "meta.json").is_file())
    if n == 1000 and (not path.exists() or torchvision_file):
        names = pretrained.imagenet_categories()
    elif not path.exists() and len(entry.meta["categories"]) == n:  # COCO detectors: 91
        names = tuple(entry.meta["categories"])
    return LoadedWeights(model_name, variables, kwargs, transform, names, tag,
                         weights_id(weights))
