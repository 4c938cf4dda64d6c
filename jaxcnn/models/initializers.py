"""Weight initializers by name, with `torch.nn.init` semantics: the one registry behind every
model's `kernel_init` / `bias_init` options.

A spec is a name with optional keyword arguments: `"xavier_uniform"`, `"normal(std=0.02)"`,
`"kaiming_normal(mode='fan_out')"`, `"constant(value=0.1)"`. Fans follow PyTorch
(`_calculate_fan_in_and_fan_out`): for a conv kernel [kh, kw, in, out] fan_in = kh*kw*in and
fan_out = kh*kw*out; for a dense kernel [in, out] the two sizes.

- `xavier_uniform` (Glorot & Bengio, 2010): U(-a, a), a = gain * sqrt(6 / (fan_in + fan_out));
  `xavier_normal`: N(0, gain * sqrt(2 / (fan_in + fan_out))).
- `kaiming_uniform` (He et al., 2015): U(-b, b), b = gain * sqrt(3 / fan);
  `kaiming_normal`: N(0, gain / sqrt(fan)); gain = sqrt(2 / (1 + a^2)) for (leaky) ReLU, so
  with a = 0 the std is sqrt(2 / fan_in). `mode` picks fan_in (default) or fan_out.
- The normal variants are NOT truncated, as in PyTorch (flax's `glorot_normal` and
  `he_normal` are truncated at 2 std, the Keras convention).
- `torch_default`: what `nn.Conv2d` / `nn.Linear` use, kaiming_uniform with a = sqrt(5), i.e.
  U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
- `uniform` defaults to U(-0.05, 0.05) (Keras' RandomUniform) rather than torch's U(0, 1).

Aliases: `glorot_uniform`, `glorot_normal`, `he_uniform`, `he_normal`.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax.linen import initializers

from jaxcnn.errors import ConfigError
from jaxcnn.models.registry import parse_spec

Initializer = Callable[..., jax.Array]
# What a model's `kernel_init` / `bias_init` field holds: None (the model's own default, i.e.
# torchvision's), a spec string, or an initializer used as is.
InitializerSpec = str | Initializer | None

_GAINS = {"linear": 1.0, "conv2d": 1.0, "sigmoid": 1.0, "identity": 1.0, "tanh": 5.0 / 3.0,
          "relu": math.sqrt(2.0), "selu": 0.75}


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """`torch.nn.init.calculate_gain`: the recommended scale for a nonlinearity."""
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else float(param)
        return math.sqrt(2.0 / (1.0 + slope**2))
    if nonlinearity not in _GAINS:
        raise ConfigError(
            f"unknown nonlinearity {nonlinearity!r} for the gain; choose one of "
            f"{sorted([*_GAINS, 'leaky_relu'])}."
        )
    return _GAINS[nonlinearity]


def _check_mode(mode: str) -> str:
    if mode not in ("fan_in", "fan_out"):
        raise ConfigError(f"mode must be 'fan_in' or 'fan_out'; got {mode!r}.")
    return mode


def _zeros() -> Initializer:
    return initializers.zeros


def _ones() -> Initializer:
    return initializers.ones


def _constant(value: float = 0.0) -> Initializer:
    return initializers.constant(float(value))


def _normal(mean: float = 0.0, std: float = 0.01) -> Initializer:
    base = initializers.normal(float(std))

    def init(key: jax.Array, shape: Any, dtype: Any = jnp.float32) -> jax.Array:
        return base(key, shape, dtype) + jnp.asarray(mean, dtype)

    return init if mean else base


def _uniform(low: float = -0.05, high: float = 0.05) -> Initializer:
    if not high > low:
        raise ConfigError(f"uniform needs low < high; got low={low}, high={high}.")

    def init(key: jax.Array, shape: Any, dtype: Any = jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, minval=low, maxval=high)

    return init


def _xavier_uniform(gain: float = 1.0) -> Initializer:
    return initializers.variance_scaling(float(gain) ** 2, "fan_avg", "uniform")


def _xavier_normal(gain: float = 1.0) -> Initializer:
    return initializers.variance_scaling(float(gain) ** 2, "fan_avg", "normal")


def _kaiming(distribution: str, a: float, mode: str, nonlinearity: str) -> Initializer:
    gain = calculate_gain(nonlinearity, a)
    return initializers.variance_scaling(gain**2, _check_mode(mode), distribution)


def _kaiming_uniform(a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu"
                     ) -> Initializer:
    return _kaiming("uniform", a, mode, nonlinearity)


def _kaiming_normal(a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu"
                    ) -> Initializer:
    return _kaiming("normal", a, mode, nonlinearity)


def _torch_default() -> Initializer:
    return _kaiming_uniform(a=math.sqrt(5.0))


_BUILDERS: dict[str, Callable[..., Initializer]] = {
    "zeros": _zeros,
    "ones": _ones,
    "constant": _constant,
    "normal": _normal,
    "uniform": _uniform,
    "xavier_uniform": _xavier_uniform,
    "xavier_normal": _xavier_normal,
    "kaiming_uniform": _kaiming_uniform,
    "kaiming_normal": _kaiming_normal,
    "torch_default": _torch_default,
}
ALIASES = {"glorot_uniform": "xavier_uniform", "glorot_normal": "xavier_normal",
           "he_uniform": "kaiming_uniform", "he_normal": "kaiming_normal"}
# These scale by fans, so they need a kernel of rank >= 2 (not a bias).
FAN_BASED = ("xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal",
             "torch_default")


def list_initializers() -> list[str]:
    """The registered initializer names (aliases included)."""
    return sorted([*_BUILDERS, *ALIASES])


def get_initializer(spec: str | Initializer, *, bias: bool = False) -> Initializer:
    """The initializer `spec` names (a callable is returned unchanged). With `bias=True`,
    fan-based initializers are refused: a bias vector has no fans."""
    if callable(spec):
        return spec
    if not isinstance(spec, str):
        raise ConfigError(
            f"an initializer is a name such as 'xavier_uniform' or a callable; got "
            f"{type(spec).__name__} {spec!r}. Choose one of {list_initializers()}."
        )
    key, kwargs = parse_spec(spec, kind="initializer")
    key = ALIASES.get(key, key)
    if key not in _BUILDERS:
        raise ConfigError(
            f"unknown initializer {spec!r}; choose one of {list_initializers()}, optionally "
            f"with arguments, e.g. 'normal(std=0.02)'."
        )
    if bias and key in FAN_BASED:
        raise ConfigError(
            f"bias_init {spec!r} scales by fan_in/fan_out, which a bias vector does not have; "
            f"use zeros, ones, constant(value=...), normal(std=...) or uniform(low=..., high=...)."
        )
    builder = _BUILDERS[key]
    allowed = list(inspect.signature(builder).parameters)
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ConfigError(
            f"initializer {key!r} got unknown argument(s) {unknown}; it takes "
            f"{allowed or 'no arguments'}."
        )
    return builder(**kwargs)


def check_initializers(module: Any) -> None:
    """Raise ConfigError now if a module's `kernel_init` / `bias_init` spec is invalid (models
    call it when constructed, so a typo fails before anything is traced)."""
    for field, bias in (("kernel_init", False), ("bias_init", True)):
        spec = getattr(module, field, None)
        if spec is not None:
            get_initializer(spec, bias=bias)


def resolve_initializer(spec: InitializerSpec, default: Initializer, *, bias: bool = False
                        ) -> Initializer:
    """`default` (the model's own, torchvision's, initializer) when `spec` is None, else the
    initializer `spec` names."""
    return default if spec is None else get_initializer(spec, bias=bias)


# The torchvision defaults the model families use, named once.
torch_default = _torch_default()
kaiming_normal_fan_out = _kaiming_normal(mode="fan_out", nonlinearity="relu")
