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
import sys
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxcnn.data.transforms import EvalTransform
from jaxcnn.errors import CheckpointError, UnknownModelError
from jaxcnn.models import create_model, get_model_spec
from jaxcnn.models import list_models as _list_registered
from jaxcnn.rundir import RunDir, is_run_dir

WEIGHTS_HELP = ("a registry tag (DEFAULT, IMAGENET1K_V1), a weight file (.msgpack, .pth, "
                ".safetensors) or `jaxcnn convert` directory, or a training workdir (its best "
                "checkpoint; --model may then be left out)")


def model_of(model: str | None, weights: str | os.PathLike | None) -> str | None:
    """The model a command runs: `model`, or, when left out (or "pixels") and `weights` is
    a training workdir, the model that workdir trained."""
    if weights is not None and model in (None, "pixels") and is_run_dir(weights):
        return RunDir(weights).info()["model"]
    if model is None and weights is not None:
        raise CheckpointError(
            f"--weights {weights} is not a training workdir, so it does not say which model it "
            "belongs to: add --model NAME (jaxcnn models lists them)."
        )
    return model


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
    """The transform of the model's most accurate registered weights when it has some, else
    the one its `pretrained_cfg` describes (ImageNet's resize-and-centre-crop and statistics
    for ImageNet-size RGB models, a plain resize with [0, 1] scaling for small inputs)."""
    from jaxcnn.pretrained import get_weights

    try:
        return get_weights(model_name, "DEFAULT").transforms()
    except UnknownModelError:
        pass
    cfg = get_model_spec(model_name).pretrained_cfg
    h, w, c = cfg["input_size"]
    resize = round(h / cfg["crop_pct"]) if cfg["crop_pct"] < 1 else 0
    return EvalTransform((h, w), c, cfg["mean"], cfg["std"], resize_size=resize)


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
    elif not path.exists() or torchvision_file:  # a detector's COCO categories (91)
        categories = tuple(pretrained.get_weights(model_name, "DEFAULT").meta["categories"]) \
            if model_name in {w.model for w in pretrained.WEIGHTS} else ()
        names = categories if len(categories) == n else ()
    return LoadedWeights(model_name, variables, kwargs, transform, names, tag,
                         weights_id(weights))


def list_models(pattern: str | None = None, *, task: str | None = None,
                pretrained: bool = False) -> list[str]:
    """Sorted registered model names (glob `pattern`, `task`); with `pretrained`, only those
    with registered weights (timm's `list_models(pretrained=True)`)."""
    names = _list_registered(pattern, task=task)
    if pretrained:
        from jaxcnn.pretrained import WEIGHTS

        with_weights = {w.model for w in WEIGHTS}
        names = [n for n in names if n in with_weights]
    return names


def load_model(name: str | None, weights: str | os.PathLike | None = "DEFAULT",
               num_classes: int | None = None, **options: Any) -> tuple[Any, dict[str, Any]]:
    """(model, variables) of model `name` with `weights` ("DEFAULT" or another registry tag,
    a weight file or directory, a training workdir, or None for a fresh random init), as
    timm's `create_model(pretrained=True)` / torchvision's `get_model(weights=)`: the model
    is built with the options the weights need (GoogLeNet's transform_input=True and no aux
    heads, a workdir's recorded options) and `options` on top; with `num_classes` different
    from the weights' head, the classifier head is freshly initialized (every other leaf
    loaded), as timm's `reset_classifier`. `name` may be None for a workdir."""
    import jax

    if weights is None:
        if name is None:
            raise CheckpointError("load_model(None, weights=None): name the model.")
        kwargs = dict(options)
        if num_classes is not None:
            kwargs["num_classes"] = num_classes
        model = create_model(name, **kwargs)
        shape = get_model_spec(name).input_shape
        x = jax.numpy.zeros((1, *shape), jax.numpy.float32)
        rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
        variables = jax.jit(lambda r, x: model.init(r, x, train=False))(rngs, x)
        return model, {k: v for k, v in variables.items() if k in ("params", "batch_stats")}
    loaded = load_weights(name, weights)
    kwargs = {**loaded.model_kwargs, **options}
    head = kwargs.get("num_classes", get_model_spec(loaded.model_name).num_classes)
    if num_classes is None or num_classes == head:
        return loaded.model(**options), loaded.variables
    kwargs["num_classes"] = num_classes
    model = create_model(loaded.model_name, **kwargs)
    # Random init with the model's own initializers ("rbg" keys: compiles fast on CPU), at
    # the smallest input that gives the same parameter shapes (adaptive pooling).
    rngs = {"params": jax.random.key(0, impl="rbg"), "dropout": jax.random.key(1, impl="rbg")}
    init = lambda r, x: model.init(r, x, train=False)
    c = loaded.transform.channels
    shapes = []
    for side in (max(get_model_spec(loaded.model_name).min_input_size, 32),
                 max(loaded.transform.size)):
        x = jax.ShapeDtypeStruct((1, side, side, c), jax.numpy.float32)
        shapes.append((side, jax.tree.map(lambda a: a.shape, jax.eval_shape(init, rngs, x))))
    side = shapes[0][0] if shapes[0][1] == shapes[1][1] else shapes[1][0]
    fresh = jax.jit(init)(rngs, jax.numpy.zeros((1, side, side, c), jax.numpy.float32))
    fresh = {k: v for k, v in fresh.items() if k in ("params", "batch_stats")}
    return model, merge_variables(fresh, loaded.variables, reinit_head=True,
                                  where=str(loaded.source))


def merge_variables(fresh: dict, loaded: dict, *, reinit_head: bool, where: str) -> dict:
    """`loaded` laid over `fresh` (same tree). A leaf missing or of another shape raises
    CheckpointError naming it and both shapes, unless `reinit_head` keeps the fresh leaf
    (then one log line names the re-initialized leaves, e.g. a new 10-class head)."""
    out, fresh_kept = {}, []
    for collection, tree in fresh.items():
        src = loaded.get(collection, {})

        def pick(path: tuple, leaf: Any, src: Any = src, collection: str = collection) -> Any:
            node = src
            for p in path:
                key = getattr(p, "key", getattr(p, "idx", p))
                if not hasattr(node, "__getitem__") or key not in node:
                    node = None
                    break
                node = node[key]
            name = collection + "/" + "/".join(str(getattr(p, "key", p)) for p in path)
            if node is None or np.shape(node) != np.shape(leaf):
                if reinit_head:
                    got = "missing" if node is None else f"{np.shape(node)}"
                    fresh_kept.append(f"{name} {np.shape(leaf)} (loaded: {got})")
                    return leaf
                got = "missing" if node is None else f"shape {np.shape(node)}"
                raise CheckpointError(
                    f"initial variables {where}: {name!r} is {got} but the model needs shape "
                    f"{np.shape(leaf)} (another architecture or num_classes?). Set "
                    "config.init.reinit_head=True to re-initialize mismatching layers."
                )
            return np.asarray(node, dtype=np.asarray(leaf).dtype)

        out[collection] = jax.tree_util.tree_map_with_path(pick, tree)
    if fresh_kept:
        print(f"init from {where}: weights kept except {len(fresh_kept)} freshly initialized "
              f"leaves (new head): {', '.join(fresh_kept)}", file=sys.stderr, flush=True)
    return out
