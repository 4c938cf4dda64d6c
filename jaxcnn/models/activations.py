"""Activation functions by name: the one registry behind every model's `activation` option.

A spec is a name with optional keyword arguments, `"relu"`, `"leaky_relu(negative_slope=0.2)"`,
`"prelu(init=0.1)"`; the defaults are PyTorch's (`nn.LeakyReLU` 0.01, `nn.PReLU` 0.25 with one
learned slope per layer, `nn.ELU` alpha 1, `nn.GELU` exact erf form, not flax's tanh
approximation). PReLU (He et al., 2015, "Delving Deep into Rectifiers") is the only one with
a parameter: it becomes a submodule, named like the layer it replaces (in VGG and AlexNet the
index torchvision's `nn.ReLU` has in its `Sequential`, e.g. `params/features_1/negative_slope`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcnn.errors import ConfigError
from jaxcnn.models.registry import parse_spec

Activation = Callable[[jax.Array], jax.Array]
# What a model's `activation` field holds: a spec string, or a callable used as is.
ActivationSpec = str | Activation


def _swish(x: jax.Array, beta: float) -> jax.Array:
    return x * jax.nn.sigmoid(beta * x)


def _relu() -> Activation:
    return jax.nn.relu


def _leaky_relu(negative_slope: float = 0.01) -> Activation:
    return partial(jax.nn.leaky_relu, negative_slope=float(negative_slope))


def _elu(alpha: float = 1.0) -> Activation:
    return partial(jax.nn.elu, alpha=float(alpha))


def _silu() -> Activation:
    return jax.nn.silu


def _swish_builder(beta: float = 1.0) -> Activation:
    # Ramachandran et al. (2017): x * sigmoid(beta x); beta = 1 is SiLU (Hendrycks & Gimpel).
    return jax.nn.silu if beta == 1.0 else partial(_swish, beta=float(beta))


def _gelu(approximate: bool = False) -> Activation:
    return partial(jax.nn.gelu, approximate=bool(approximate))


def _tanh() -> Activation:
    return jnp.tanh


def _sigmoid() -> Activation:
    return jax.nn.sigmoid


def _relu6() -> Activation:
    return jax.nn.relu6


def _identity() -> Activation:
    return lambda x: x


def _prelu(init: float = 0.25, *, name: str | None = None, param_dtype: Any = jnp.float32
           ) -> Activation:
    return nn.PReLU(negative_slope_init=float(init), param_dtype=param_dtype, name=name)


# name -> builder taking the spec's keyword arguments (PyTorch's defaults).
_BUILDERS: dict[str, Callable[..., Activation]] = {
    "relu": _relu,
    "leaky_relu": _leaky_relu,
    "prelu": _prelu,
    "elu": _elu,
    "silu": _silu,
    "swish": _swish_builder,
    "gelu": _gelu,
    "tanh": _tanh,
    "sigmoid": _sigmoid,
    "relu6": _relu6,
    "identity": _identity,
}
LEARNED = ("prelu",)  # activations with parameters (a submodule in the model)


def list_activations() -> list[str]:
    """The registered activation names."""
    return sorted(_BUILDERS)


def _resolve(spec: str) -> tuple[str, dict[str, Any]]:
    """(registered name, keyword arguments) of a spec string, validated."""
    if not isinstance(spec, str):
        raise ConfigError(
            f"an activation is a name such as 'relu' or a callable; got {type(spec).__name__} "
            f"{spec!r}. Choose one of {list_activations()}."
        )
    key, kwargs = parse_spec(spec, kind="activation")
    if key not in _BUILDERS:
        raise ConfigError(
            f"unknown activation {spec!r}; choose one of {list_activations()}, optionally "
            f"with arguments, e.g. 'leaky_relu(negative_slope=0.2)'."
        )
    parameters = inspect.signature(_BUILDERS[key]).parameters
    allowed = [p for p, v in parameters.items()
               if v.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ConfigError(
            f"activation {key!r} got unknown argument(s) {unknown}; it takes "
            f"{allowed or 'no arguments'}."
        )
    return key, kwargs


def get_activation(
    spec: ActivationSpec, *, name: str | None = None, param_dtype: Any = jnp.float32
) -> Activation:
    """The activation `spec` names (a callable is returned unchanged). A learned one (PReLU)
    is a new flax submodule called `name`: call this inside the parent's compact method."""
    if callable(spec):
        return spec
    key, kwargs = _resolve(spec)
    if key in LEARNED:
        return _BUILDERS[key](**kwargs, name=name, param_dtype=param_dtype)
    return _BUILDERS[key](**kwargs)


def check_activation(spec: ActivationSpec) -> None:
    """Raise ConfigError now if `spec` is not a valid activation; builds nothing (models call
    it when constructed, so a typo fails before anything is traced)."""
    if not callable(spec):
        _resolve(spec)
