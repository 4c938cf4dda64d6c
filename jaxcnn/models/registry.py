"""One registry for every network: `create_model(name)`, `list_models()`, and the metadata
(task, canonical input shape, minimum input size) that tests and the trainer read."""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcnn.errors import ConfigError, UnknownModelError

TASKS = ("classification", "segmentation", "reconstruction", "embedding")


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


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(
    *,
    family: str,
    task: str = "classification",
    input_shape: tuple[int, int, int] = (224, 224, 3),
    min_input_size: int = 32,
    num_classes: int = 1000,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering a builder function under its own name."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")

    def decorate(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = builder.__name__
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = ModelSpec(
            name, family, builder, task, tuple(input_shape), min_input_size, num_classes
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
    """Build the registered model `name`; `num_classes` and `overrides` set module fields."""
    spec = get_model_spec(name)
    if num_classes is not None:
        overrides["num_classes"] = num_classes
    try:
        return spec.builder(**overrides)
    except TypeError:
        model_fields = model_options(name)
        unknown = sorted(set(overrides) - set(model_fields))
        if not unknown:
            raise
        raise ConfigError(
            f"create_model({name!r}) got unknown option(s) {unknown}; "
            f"valid options are {sorted(model_fields)}."
        ) from None


def model_options(name: str) -> list[str]:
    """The fields of model `name` that `create_model` accepts as overrides."""
    module = get_model_spec(name).builder()
    return [f.name for f in dataclasses.fields(module) if f.name not in ("parent", "name")]


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


def abstract_variables(model: nn.Module, input_shape: tuple[int, int, int]) -> dict:
    """Shapes and dtypes of `model`'s variables without computing them (`jax.eval_shape`)."""
    x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
    rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
    return dict(jax.eval_shape(lambda r, x: model.init(r, x, train=False), rngs, x))
