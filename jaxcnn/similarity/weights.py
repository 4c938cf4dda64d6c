"""Where a FeatureExtractor's variables come from: a training workdir (the orbax checkpoints
and `config.json` written by `jaxcnn.train.fit`, read here directly with orbax so that
similarity does not depend on the training package), a flax msgpack file, or named
pretrained weights (`jaxcnn.pretrained.load`)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxcnn.errors import CheckpointError
from jaxcnn.models import abstract_variables, create_model, get_model_spec

# Native image sizes of the tfds datasets the trainer is typically run on (image_size=0).
_TFDS_SIZES = {"cifar10": 32, "cifar100": 32, "mnist": 28, "fashion_mnist": 28, "svhn_cropped": 32}


@dataclasses.dataclass
class LoadedWeights:
    """Variables plus what is needed to use them: head size, preprocessing, model options."""

    variables: dict[str, Any]
    num_classes: int | None
    preprocessing: Any  # features.Preprocessing | None (None: the model's default)
    model_kwargs: dict[str, Any]
    source: str


def is_workdir(path: str | Path) -> bool:
    """Whether `path` looks like a jaxcnn training workdir."""
    p = Path(path)
    return p.is_dir() and ((p / "checkpoints").is_dir() or (p / "config.json").exists())


def load_weights(model_name: str, weights: str | Path) -> LoadedWeights:
    """Variables for `model_name` from a training workdir, a weights file or directory
    (.msgpack, .pth, .safetensors, `jaxcnn convert` output), or a torchvision weights tag
    ("IMAGENET1K_V1", "DEFAULT") through jaxcnn.pretrained, with the matching preprocessing."""
    p = Path(weights).expanduser()
    if is_workdir(p):
        return load_workdir(p, model_name)
    from jaxcnn import pretrained

    if p.exists():
        variables = dict(pretrained.load(model_name, path=p))
        tag = "IMAGENET1K_V1"
    else:
        tag = str(weights)
        variables = dict(pretrained.load(model_name, weights=tag))
    prep = pretrained_preprocessing(model_name, tag)
    return LoadedWeights(variables, _infer_num_classes(model_name, variables, {}), prep, {},
                         str(weights))


def pretrained_preprocessing(model_name: str, tag: str = "IMAGENET1K_V1") -> Any:
    """The evaluation transform registered with torchvision weights `tag` of `model_name`, as
    a features.Preprocessing (None when the model has no registered weights)."""
    from jaxcnn.errors import UnknownModelError
    from jaxcnn.pretrained import get_weights
    from jaxcnn.similarity.features import Preprocessing

    try:
        entry = get_weights(model_name, tag)
    except UnknownModelError:
        return None
    return Preprocessing((entry.crop_size, entry.crop_size), 3,
                         tuple(255.0 * m for m in entry.mean), tuple(255.0 * s for s in entry.std),
                         resize_shorter=entry.resize_size)


def load_workdir(workdir: Path, model_name: str | None = None) -> LoadedWeights:
    """The latest checkpoint of a training workdir, with the run's model options and the
    preprocessing it trained with (size, channels, mean/std from `config.json`)."""
    import orbax.checkpoint as ocp

    from jaxcnn.similarity.features import Preprocessing

    config = _read_config(workdir)
    trained = config.get("model", {}).get("name")
    if model_name and trained and trained != model_name:
        raise CheckpointError(
            f"{workdir} trained {trained!r}, not {model_name!r}: use --model {trained}."
        )
    model_name = model_name or trained
    workdir = workdir.absolute()  # orbax refuses relative paths
    directory = workdir / "checkpoints" if (workdir / "checkpoints").is_dir() else workdir
    try:
        with ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(
                read_only=True), item_names=("state", "meta")) as mngr:
            step = mngr.latest_step()
            if step is None:
                raise CheckpointError(f"no checkpoint in {directory}; train first.")
            tree = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    except CheckpointError:
        raise
    except Exception as err:
        raise CheckpointError(f"cannot read the checkpoints in {directory}: "
                              f"{type(err).__name__}: {err}") from err
    state = tree["state"]
    variables = {"params": state["params"]}
    if state.get("batch_stats"):
        variables["batch_stats"] = state["batch_stats"]
    kwargs = dict(config.get("model", {}).get("kwargs", {}) or {})
    kwargs.pop("num_classes", None)
    kwargs.pop("dtype", None)
    data = config.get("data", {})
    spec = get_model_spec(model_name)
    size = _trained_image_size(data, spec.input_shape[0])
    channels = 1 if data.get("source") == "digits" else int(
        data.get("channels", spec.input_shape[-1]) or spec.input_shape[-1])
    prep = Preprocessing((size, size), channels, tuple(data.get("mean", (0.0,))),
                         tuple(data.get("std", (255.0,))))
    num_classes = _infer_num_classes(model_name, variables, kwargs, (size, size, channels))
    return LoadedWeights(variables, num_classes, prep, kwargs, f"{workdir} (step {step})")


def _read_config(workdir: Path) -> dict[str, Any]:
    path = workdir / "config.json"
    if not path.exists():
        raise CheckpointError(f"{workdir} has no config.json: not a jaxcnn training workdir.")
    return json.loads(path.read_text())


def _trained_image_size(data: dict[str, Any], default: int) -> int:
    if int(data.get("image_size", 0) or 0):
        return int(data["image_size"])
    source = data.get("source")
    if source == "digits":
        return 32
    if source == "tfds" and data.get("name") in _TFDS_SIZES:
        return _TFDS_SIZES[data["name"]]
    if source == "folder" and data.get("path"):
        from jaxcnn.data.images import list_images, load_image

        split = Path(data["path"]) / data.get("train_split", "train")
        try:
            return int(load_image(list_images(split)[0]).shape[0])
        except Exception:  # the data may not be on this machine; fall back to the model's
            return default
    if source in ("npz", "arrays") and data.get("path") and Path(data["path"]).exists():
        with np.load(data["path"]) as z:
            return int(z["x_train"].shape[1])
    return default


def _infer_num_classes(model_name: str, variables: dict[str, Any], kwargs: dict[str, Any],
                       input_shape: tuple[int, int, int] | None = None) -> int | None:
    """The head size that makes the model's variables match `variables` (None: the
    default fits); the trainer sets num_classes from the dataset, so it is not in config."""
    spec = get_model_spec(model_name)
    shape = input_shape or spec.input_shape
    wanted = _shapes(abstract_variables(create_model(model_name, **kwargs), shape)["params"])
    saved = _shapes(variables["params"])
    if wanted == saved:
        return None
    diffs = {saved[k][-1] for k in wanted if k in saved and saved[k] != wanted[k]}
    if len(diffs) == 1 and set(wanted) == set(saved):
        n = diffs.pop()
        fixed = _shapes(abstract_variables(create_model(model_name, num_classes=n, **kwargs),
                                           shape)["params"])
        if fixed == saved:
            return n
    bad = sorted(set(wanted) ^ set(saved)) or sorted(k for k in wanted if saved[k] != wanted[k])
    raise CheckpointError(
        f"the weights do not fit {model_name}: e.g. {bad[:3]} differ. They belong to another "
        "architecture; pass the --model they were trained with."
    )


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(path): tuple(np.shape(leaf)) for path, leaf in leaves}
