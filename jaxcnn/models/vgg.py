"""VGG (Simonyan & Zisserman, 2014, "Very Deep Convolutional Networks for Large-Scale Image
Recognition"), configurations A/B/D/E (VGG-11/13/16/19) with and without BatchNorm, exactly as
torchvision's `torchvision/models/vgg.py`: 3x3 pad-1 convs, 2x2 max-pools, adaptive avg-pool
to 7x7, classifier Linear-ReLU-Dropout-Linear-ReLU-Dropout-Linear, torchvision's init
(Kaiming-normal fan_out convs, N(0, 0.01) linears, zero biases).

Naming rule: torchvision's module paths with '.' -> '_', keeping its Sequential indices
(`features.0.weight` -> `params/features_0/kernel`; with BN `features.1.running_mean` ->
`batch_stats/features_1/mean`; `classifier.0/3/6` -> `classifier_0/3/6`). Flatten is NHWC, so
a converter permutes `classifier.0.weight`'s input axis from torch's CHW order.

`activation`, `kernel_init` and `bias_init` choose other activations and initializations by
name (`jaxcnn.models.activations`, `jaxcnn.models.initializers`); an initializer given here
applies to every conv and linear layer. A learned PReLU takes the name of the `nn.ReLU` it
replaces in torchvision's `Sequential` (`features_1`, `classifier_1`, ...).
"""

from __future__ import annotations

from functools import partial
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcnn.models.activations import ActivationSpec, check_activation, get_activation
from jaxcnn.models.initializers import (
    InitializerSpec,
    check_initializers,
    get_initializer,
    kaiming_normal_fan_out,
    resolve_initializer,
)
from jaxcnn.models.layers import (
    Classifier,
    Dtype,
    adaptive_avg_pool,
    batch_norm,
    check_input,
    classifier_head,
    flatten,
    max_pool,
)
from jaxcnn.models.registry import register_model

# torchvision's `cfgs`: an int is a 3x3 conv with that many filters, "M" a 2x2 max-pool.
CFGS: dict[str, tuple[int | str, ...]] = {
    "A": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "B": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "D": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    "E": (
        *(64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M"),
        *(512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
    ),
}

# torchvision: kaiming_normal_(mode="fan_out", nonlinearity="relu") for convs, N(0, 0.01) for
# linears; all biases 0 (flax's default).
conv_init = kaiming_normal_fan_out
linear_init = get_initializer("normal(std=0.01)")


class VGG(Classifier):
    """VGG as data: `cfg` lists the conv widths and "M" pools; `batch_norm` adds BN after
    every conv. Stage i is the output of the i-th max-pool."""

    cfg: tuple[int | str, ...]
    batch_norm: bool = False
    num_classes: int = 1000
    pool_size: int = 7  # adaptive avg-pool output side
    hidden: int = 4096  # width of the two hidden FC layers
    dropout: float = 0.5
    in_channels: int = 3
    activation: ActivationSpec = "relu"
    kernel_init: InitializerSpec = None  # None: torchvision's (conv_init, linear_init)
    bias_init: InitializerSpec = None  # None: zeros
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    head_name: ClassVar[str] = "classifier_6"

    def __post_init__(self) -> None:
        check_activation(self.activation)
        check_initializers(self)
        super().__post_init__()

    def group_matcher(self) -> dict[str, str]:
        """Stage i: the convs (and BNs, and learned activations) before the i-th max-pool, at
        torchvision's `features` indices; then the two hidden FCs and the head."""
        groups, index, members = {}, 0, []
        for v in self.cfg:
            if v == "M":
                groups[f"stage{len(groups) + 1}"] = "|".join(members)
                index, members = index + 1, []
                continue
            step = 3 if self.batch_norm else 2
            members.extend(f"features_{index + k}" for k in range(step))
            index += step
        return {**groups, "fc": r"classifier_[0134]", "head": r"classifier_6"}

    @property
    def min_input_size(self) -> int:
        """Smallest H (= W) that survives every 2x2 pool."""
        return 2 ** self.cfg.count("M")

    @nn.compact
    def features(self, x: jax.Array, train: bool = False) -> dict[str, jax.Array]:
        name = f"vgg{len([v for v in self.cfg if v != 'M']) + 3}{'_bn' * self.batch_norm}"
        check_input(x, model=name, channels=self.in_channels, min_size=self.min_input_size)
        norm = batch_norm(train, dtype=self.dtype, param_dtype=self.param_dtype, epsilon=1e-5)
        act = partial(get_activation, self.activation, param_dtype=self.param_dtype)
        bias_init = resolve_initializer(self.bias_init, nn.initializers.zeros, bias=True)
        conv_kernel_init = resolve_initializer(self.kernel_init, conv_init)
        linear_kernel_init = resolve_initializer(self.kernel_init, linear_init)
        dense = partial(nn.Dense, kernel_init=linear_kernel_init, bias_init=bias_init,
                        dtype=self.dtype, param_dtype=self.param_dtype)
        out = {}
        index = 0  # position in torchvision's `features` Sequential
        for v in self.cfg:
            if v == "M":
                x = out[f"stage{len(out) + 1}"] = max_pool(x, 2, 2)
                index += 1
                continue
            x = nn.Conv(
                v,
                (3, 3),
                padding=1,
                kernel_init=conv_kernel_init,
                bias_init=bias_init,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name=f"features_{index}",
            )(x)
            if self.batch_norm:
                x = norm(name=f"features_{index + 1}")(x)
            x = act(name=f"features_{index + 1 + self.batch_norm}")(x)
            index += 3 if self.batch_norm else 2
        x = flatten(adaptive_avg_pool(x, (self.pool_size, self.pool_size)))
        x = act(name="classifier_1")(dense(self.hidden, name="classifier_0")(x))
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        x = out["pre_logits"] = act(name="classifier_4")(dense(self.hidden, name="classifier_3")(x))
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        out["logits"] = classifier_head(
            x,
            self.num_classes,
            kernel_init=linear_kernel_init,
            bias_init=bias_init,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="classifier_6",
        )
        return out


_register = partial(register_model, family="vgg", input_shape=(224, 224, 3), min_input_size=32,
                    first_conv="features_0")


@_register()
def vgg11(**kwargs) -> VGG:
    """VGG-11 (configuration A): 132,863,336 parameters."""
    return VGG(cfg=CFGS["A"], **kwargs)


@_register()
def vgg13(**kwargs) -> VGG:
    """VGG-13 (configuration B): 133,047,848 parameters."""
    return VGG(cfg=CFGS["B"], **kwargs)


@_register()
def vgg16(**kwargs) -> VGG:
    """VGG-16 (configuration D): 138,357,544 parameters."""
    return VGG(cfg=CFGS["D"], **kwargs)


@_register()
def vgg19(**kwargs) -> VGG:
    """VGG-19 (configuration E): 143,667,240 parameters."""
    return VGG(cfg=CFGS["E"], **kwargs)


@_register()
def vgg11_bn(**kwargs) -> VGG:
    """VGG-11 with BatchNorm: 132,868,840 parameters."""
    return VGG(cfg=CFGS["A"], batch_norm=True, **kwargs)


@_register()
def vgg13_bn(**kwargs) -> VGG:
    """VGG-13 with BatchNorm: 133,053,736 parameters."""
    return VGG(cfg=CFGS["B"], batch_norm=True, **kwargs)


@_register()
def vgg16_bn(**kwargs) -> VGG:
    """VGG-16 with BatchNorm: 138,365,992 parameters."""
    return VGG(cfg=CFGS["D"], batch_norm=True, **kwargs)


@_register()
def vgg19_bn(**kwargs) -> VGG:
    """VGG-19 with BatchNorm: 143,678,248 parameters."""
    return VGG(cfg=CFGS["E"], batch_norm=True, **kwargs)


def _tiny_vgg(**kwargs) -> VGG:
    """Two 8/16-filter stages, 2x2 pooled, 32-wide FCs: for fast tests, not registered."""
    return VGG(
        **{"cfg": (8, "M", 16, "M"), "pool_size": 2, "hidden": 32, "num_classes": 10, **kwargs}
    )
