"""One registry for every network: `create_model(name)`, `list_models()`, and the metadata
(task, canonical input shape, minimum input size, timm's `pretrained_cfg` and `feature_info`)
that tests, the trainer and the weights API read."""

from __future__ import annotations

import ast
import dataclasses
import difflib
import fnmatch
import functools
import math
import re
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn.errors import ConfigError, UnknownModelError

TASKS = ("classification", "segmentation", "reconstruction", "embedding", "localization",
         "detection")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What the registry knows about a model besides how to build it."""

    name: str
    family: str
    builder: Callable[..., nn.Module]
    task: str = "classification"
    input_shape: tuple[int, int, int] = (224, 224, 3)  # canonical (H, W, C)
    min_input_size: int = 32  # smallest H (= W) the network accepts
    num_classes: int = 1000  # default head size
    first_conv: str = ""  # the first conv's module path ("conv1"), as timm's pretrained_cfg

    @property
    def pretrained_cfg(self) -> dict[str, Any]:
        """timm's `pretrained_cfg` of the model's default evaluation: input_size (H, W, C),
        interpolation, crop_pct, mean and std (the [0, 255] pixel scale), num_classes, and the
        classifier and first-conv module names. ImageNet-size RGB models use torchvision's
        ImageNet statistics and 224/256 crop (registered weights may refine it, e.g. 232
        resize for IMAGENET1K_V2); small-input models a plain resize and [0, 1] scaling."""
        h, w, c = self.input_shape
        imagenet = min(h, w) >= 64 and c == 3
        return {
            "input_size": self.input_shape,
            "interpolation": "bilinear",
            "crop_pct": 224 / 256 if imagenet else 1.0,
            "mean": IMAGENET_MEAN_255 if imagenet else (0.0,),
            "std": IMAGENET_STD_255 if imagenet else (255.0,),
            "num_classes": self.num_classes,
            "classifier": getattr(self.builder(), "head_name", ""),
            "first_conv": self.first_conv,
        }


# torchvision's ImageNet statistics x 255 (jaxcnn.data.transforms holds the same, for images).
IMAGENET_MEAN_255 = (123.675, 116.28, 103.53)
IMAGENET_STD_255 = (58.395, 57.12, 57.375)

_REGISTRY: dict[str, ModelSpec] = {}


def register_model(
    *,
    family: str,
    task: str = "classification",
    input_shape: tuple[int, int, int] = (224, 224, 3),
    min_input_size: int = 32,
    num_classes: int = 1000,
    first_conv: str = "",
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering a builder function under its own name."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")

    def decorate(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = builder.__name__
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = ModelSpec(
            name, family, builder, task, tuple(input_shape), min_input_size, num_classes,
            first_conv,
        )
        return builder

    return decorate


def list_models(pattern: str | None = None, *, task: str | None = None) -> list[str]:
    """Sorted registered names, optionally filtered by a glob `pattern` and a `task`."""
    names = sorted(_REGISTRY)
    if pattern is not None:
        names = fnmatch.filter(names, pattern)
    if task is not None:
        names = [n for n in names if _REGISTRY[n].task == task]
    return names


def get_model_spec(name: str) -> ModelSpec:
    """The `ModelSpec` of a registered model; an unknown name lists close matches."""
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, _REGISTRY, n=5, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise UnknownModelError(
            f"Unknown model {name!r}.{hint} See jaxcnn.list_models() for all "
            f"{len(_REGISTRY)} names."
        ) from None


def create_model(name: str, num_classes: int | None = None, **overrides: Any) -> nn.Module:
    """Build the registered model `name`; `num_classes` and `overrides` set module fields.
    Unknown options, options the architecture fixes (resnet18's stage_sizes, vgg11's cfg)
    and values of the wrong type or range raise ConfigError naming the option."""
    spec = get_model_spec(name)
    if num_classes is not None:
        overrides["num_classes"] = num_classes
    fixed = _fixed_options(name)
    clash = sorted(set(overrides) & set(fixed))
    if clash:
        shown = ", ".join(f"{k}={fixed[k]!r}" for k in clash)
        raise ConfigError(
            f"create_model({name!r}): {shown} {'is' if len(clash) == 1 else 'are'} fixed by "
            f"the architecture {name} and cannot be overridden. Choose another registered "
            f"model (jaxcnn.list_models()) or build {type(spec.builder()).__name__} directly "
            "with your own values."
        )
    try:
        module = spec.builder(**overrides)
    except TypeError:
        model_fields = model_options(name)
        unknown = sorted(set(overrides) - set(model_fields))
        if not unknown:
            raise
        raise ConfigError(
            f"create_model({name!r}) got unknown option(s) {unknown}; "
            f"valid options are {sorted(model_fields)}."
        ) from None
    for key in overrides:
        _check_option(name, module, key)
    return module


def model_options(name: str) -> list[str]:
    """The fields of model `name` that `create_model` accepts as overrides."""
    module = get_model_spec(name).builder()
    fixed = _fixed_options(name)
    return [f.name for f in dataclasses.fields(module)
            if f.name not in ("parent", "name") and f.name not in fixed]


@functools.cache
def _fixed_options(name: str) -> dict[str, Any]:
    """{field: value} of the fields the builder of `name` sets itself (passing them again
    would be "got multiple values")."""
    builder = get_model_spec(name).builder
    default = builder()
    fixed = {}
    for f in dataclasses.fields(default):
        if f.name in ("parent", "name"):
            continue
        try:
            builder(**{f.name: getattr(default, f.name)})
        except TypeError:
            fixed[f.name] = getattr(default, f.name)
    return fixed


def _check_option(name: str, module: nn.Module, key: str) -> None:
    """ConfigError unless field `key` of `module` has a value of its declared type (int,
    float, bool, str, int | None) in range: counts and sizes positive (num_classes and
    options defaulting to 0 may be 0), dropout rates in [0, 1), multipliers positive."""
    field = {f.name: f for f in dataclasses.fields(module)}.get(key)
    if field is None:
        return
    value, kind = getattr(module, key), str(field.type).replace(" ", "")
    if kind == "int|None" and value is None:
        return

    def fail(expected: str) -> None:
        raise ConfigError(f"create_model({name!r}): option {key} must be {expected}; got "
                          f"{type(value).__name__} {value!r}.")

    is_bool = isinstance(value, bool | np.bool_)
    if kind in ("int", "int|None"):
        lowest = 0 if key == "num_classes" or field.default == 0 or key in getattr(
            module, "zero_options", ()) else 1
        if is_bool or not isinstance(value, int | np.integer) or value < lowest:
            fail(f"an int >= {lowest}" + (" (0: no classifier head, pooled features)"
                                          if key == "num_classes" else ""))
    elif kind == "float":
        if is_bool or not isinstance(value, int | float | np.number) or not math.isfinite(value):
            fail("a finite number")
        if key.startswith("dropout") and not 0 <= value < 1:
            fail("a dropout rate in [0, 1)")
        if key.endswith("_mult") and not value > 0:
            fail("a positive multiplier")
    elif kind == "bool" and not is_bool:
        fail("True or False")
    elif kind == "str" and not isinstance(value, str):
        fail("a string")


def count_params(variables: Any) -> int:
    """Number of trainable parameters: the `params` collection only (not BN statistics)."""
    if isinstance(variables, dict) or hasattr(variables, "keys"):
        params = variables.get("params", variables)
    else:
        params = variables
    return int(sum(leaf.size for leaf in jax.tree_util.tree_leaves(params)))


def init_variables(
    model: nn.Module, input_shape: tuple[int, int, int], seed: int = 0, batch_size: int = 1
) -> dict:
    """Initialise `model` on a zero batch of `input_shape` (H, W, C) under `jax.jit`."""
    x = jnp.zeros((batch_size, *input_shape), jnp.float32)
    rngs = {"params": jax.random.key(seed), "dropout": jax.random.key(seed + 1)}
    variables = jax.jit(lambda r, x: model.init(r, x, train=False))(rngs, x)
    return dict(variables)


def parse_spec(spec: str, *, kind: str) -> tuple[str, dict[str, Any]]:
    """Split an option string such as `"leaky_relu(negative_slope=0.2)"` into its name and
    keyword arguments (Python literals); `kind` ("activation", "initializer") names the option
    in errors. A bare name has no arguments."""
    match = re.fullmatch(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:\((.*)\))?\s*", spec or "", re.S)
    if match is None:
        raise ConfigError(
            f"cannot read the {kind} {spec!r}: write a name, optionally with keyword "
            f"arguments, e.g. 'name' or 'name(key=0.1)'."
        )
    name, args = match.group(1).lower(), match.group(2)
    kwargs: dict[str, Any] = {}
    if args and args.strip():
        try:
            call = ast.parse(f"f({args})", mode="eval").body
            if call.args:
                raise ValueError("positional arguments")
            kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}
        except (SyntaxError, ValueError) as err:
            raise ConfigError(
                f"cannot read the arguments of the {kind} {spec!r} ({err}): give keyword "
                f"arguments with literal values, e.g. '{name}(key=0.1)'."
            ) from None
    return name, kwargs


def abstract_variables(model: nn.Module, input_shape: tuple[int, int, int]) -> dict:
    """Shapes and dtypes of `model`'s variables without computing them (`jax.eval_shape`)."""
    x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
    rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
    return dict(jax.eval_shape(lambda r, x: model.init(r, x, train=False), rngs, x))


@functools.cache
def feature_info(name: str) -> tuple[dict[str, Any], ...]:
    """timm's `feature_info` of a registered classifier at its canonical input size: for each
    stage of `features()` (not pre_logits / logits), its name, channels and reduction (input
    side / stage side), from `jax.eval_shape` (nothing computed)."""
    spec = get_model_spec(name)
    model = spec.builder()
    if not callable(getattr(model, "features", None)):
        raise ConfigError(f"{name} has no features() stages (task {spec.task}).")
    x = jax.ShapeDtypeStruct((1, *spec.input_shape), jnp.float32)
    rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
    out, _ = jax.eval_shape(
        lambda r, x: model.init_with_output(r, x, train=False, method=model.features), rngs, x)
    stages = [{"module": k, "num_chs": int(v.shape[-1]),
               "reduction": round(spec.input_shape[0] / int(v.shape[1]))}
              for k, v in out.items() if k not in ("pre_logits", "logits") and v.ndim == 4]
    return tuple(sorted(stages, key=lambda f: (f["reduction"], f["module"] != "stem",
                                               f["module"])))
