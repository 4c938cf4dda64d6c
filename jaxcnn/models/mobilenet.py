"""MobileNets: depthwise-separable convolutions.

- `mobilenet_v1`: Howard et al., 2017, "MobileNets", Table 1: a 3x3/2 conv with 32 filters,
  13 depthwise-separable blocks (depthwise 3x3 + BN + ReLU, pointwise 1x1 + BN + ReLU),
  global average pooling and one FC layer; 4,231,976 parameters. There is no torchvision
  MobileNetV1; BN eps follows PyTorch (1e-5) and convs use torchvision's Kaiming fan_out init.
- `mobilenet_v2`: Sandler et al., 2018, "MobileNetV2", exactly torchvision's
  `torchvision/models/mobilenetv2.py`: inverted residuals with linear bottlenecks, ReLU6,
  channel counts rounded by `_make_divisible`, dropout 0.2 before the classifier;
  3,504,872 parameters.

MobileNetV2 names mirror torchvision's state_dict with Sequential indices joined by '_'
(`features.2.conv.3.weight` -> `features_2/conv_3/scale`); a torchvision
`Conv2dNormActivation` is a `ConvBNAct` whose children `0`, `1` are named `conv`, `bn`
(`features.2.conv.0.1.running_var` -> `batch_stats/features_2/conv_0/bn/var`).
"""

from __future__ import annotations

from functools import partial
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcnn.models.initializers import kaiming_normal_fan_out as kaiming_fan_out
from jaxcnn.models.layers import (
    Classifier,
    ConvBNAct,
    Dtype,
    ModuleDef,
    batch_norm,
    check_input,
    classifier_head,
)
from jaxcnn.models.registry import register_model
from jaxcnn.models.resnet import conv_layer

# MobileNet v1, Table 1: (pointwise output channels, depthwise stride) of the 13 blocks.
V1_BLOCKS: tuple[tuple[int, int], ...] = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
)  # fmt: skip

# MobileNet v2, Table 2 (torchvision's `inverted_residual_setting`): expansion t, channels c,
# repeats n, first stride s.
V2_SETTING: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """torchvision's `_make_divisible`: round to a multiple of `divisor`, never below 90%."""
    min_value = divisor if min_value is None else min_value
    new_value = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new_value < 0.9 * value:
        new_value += divisor
    return new_value


def _stage_ends(strides: list[int]) -> list[int]:
    """Indices of the blocks that end a resolution level: the block before each stride-2
    block, and the last one. Stage k's output has stride 2**k relative to the stem's input."""
    return [i for i in range(len(strides)) if i + 1 == len(strides) or strides[i + 1] == 2]


def _stage_groups(strides: list[int], names: list[str]) -> dict[str, str]:
    """{"stage k": regex of the module names of its blocks} (`names[i]`: block i's regex)."""
    groups, start = {}, 0
    for k, end in enumerate(_stage_ends(strides), start=1):
        groups[f"stage{k}"] = "|".join(names[start:end + 1])
        start = end + 1
    return groups


class MobileNetV1(Classifier):
    """MobileNet v1 with width multiplier `width_mult` (alpha in the paper); `blocks` lists
    (pointwise channels, depthwise stride) per depthwise-separable block."""

    num_classes: int = 1000
    width_mult: float = 1.0
    blocks: tuple[tuple[int, int], ...] = V1_BLOCKS
    in_channels: int = 3
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def group_matcher(self) -> dict[str, str]:
        """The stem, one group per resolution level (the `features()` stages), the head."""
        strides = [s for _, s in self.blocks]
        names = [f"block{i + 1}_(dw|pw)" for i in range(len(strides))]
        return {"stem": r"stem", **_stage_groups(strides, names), "head": r"fc"}

    @nn.compact
    def features(self, x: jax.Array, train: bool = False) -> dict[str, jax.Array]:
        check_input(x, model="mobilenet_v1", channels=self.in_channels, min_size=32)
        conv = partial(
            ConvBNAct,
            norm=batch_norm(train, dtype=self.dtype, param_dtype=self.param_dtype),
            kernel_init=kaiming_fan_out,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )
        width = lambda c: max(1, int(c * self.width_mult))
        out = {}
        x = out["stem"] = conv(width(32), 3, 2, name="stem")(x)
        ends = _stage_ends([s for _, s in self.blocks])
        for i, (channels, strides) in enumerate(self.blocks):
            x = conv(x.shape[-1], 3, strides, groups=x.shape[-1], name=f"block{i + 1}_dw")(x)
            x = conv(width(channels), 1, name=f"block{i + 1}_pw")(x)
            if i in ends:
                out[f"stage{ends.index(i) + 1}"] = x
        x = out["pre_logits"] = jnp.mean(x, axis=(1, 2))
        out["logits"] = classifier_head(
            x, self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype, name="fc"
        )
        return out


class InvertedResidual(nn.Module):
    """torchvision's `InvertedResidual`: [1x1 expand] -> 3x3 depthwise -> 1x1 linear; the
    input is added back when stride is 1 and the channel count is unchanged."""

    out_features: int
    strides: int
    expand_ratio: int
    norm: ModuleDef
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        in_features = x.shape[-1]
        hidden = int(round(in_features * self.expand_ratio))
        conv_bn = partial(
            ConvBNAct,
            norm=self.norm,
            act=nn.relu6,
            kernel_init=kaiming_fan_out,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )
        layers = [partial(conv_bn, hidden, 1)] if self.expand_ratio != 1 else []
        layers.append(partial(conv_bn, hidden, 3, self.strides, groups=hidden))
        y = x
        for i, layer in enumerate(layers):
            y = layer(name=f"conv_{i}")(y)
        n = len(layers)
        y = conv_layer(
            self.out_features, 1, dtype=self.dtype, param_dtype=self.param_dtype, name=f"conv_{n}"
        )(y)
        y = self.norm(name=f"conv_{n + 1}")(y)
        if self.strides == 1 and in_features == self.out_features:
            y = x + y
        return y


class MobileNetV2(Classifier):
    """torchvision's MobileNetV2 (`width_mult`, `inverted_residual_setting` rows (t, c, n, s),
    `round_nearest=8`, dropout 0.2)."""

    num_classes: int = 1000
    width_mult: float = 1.0
    inverted_residual_setting: tuple[tuple[int, int, int, int], ...] = V2_SETTING
    dropout: float = 0.2
    in_channels: int = 3
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    head_name: ClassVar[str] = "classifier_1"

    def _blocks(self) -> list[tuple[int, int, int]]:
        """(channels, stride, expansion) of every inverted-residual block."""
        return [
            (make_divisible(c * self.width_mult), s if i == 0 else 1, t)
            for t, c, n, s in self.inverted_residual_setting
            for i in range(n)
        ]

    def group_matcher(self) -> dict[str, str]:
        """features_0 as the stem, one group per resolution level (torchvision's strides;
        the final 1x1 conv to 1280 closes the last one), the classifier_1 head."""
        strides = [s for _, s, _ in self._blocks()]
        names = [f"features_{i + 1}" for i in range(len(strides))]
        names[-1] += f"|features_{len(strides) + 1}"
        return {"stem": r"features_0", **_stage_groups(strides, names), "head": r"classifier_1"}

    @nn.compact
    def features(self, x: jax.Array, train: bool = False) -> dict[str, jax.Array]:
        check_input(x, model="mobilenet_v2", channels=self.in_channels, min_size=32)
        norm = batch_norm(train, dtype=self.dtype, param_dtype=self.param_dtype)
        conv_bn = partial(
            ConvBNAct,
            norm=norm,
            act=nn.relu6,
            kernel_init=kaiming_fan_out,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )
        blocks = self._blocks()
        ends = _stage_ends([s for _, s, _ in blocks])
        out = {}
        x = out["stem"] = conv_bn(make_divisible(32 * self.width_mult), 3, 2, name="features_0")(x)
        for i, (channels, strides, t) in enumerate(blocks):
            x = InvertedResidual(
                channels, strides, t, norm, self.dtype, self.param_dtype, name=f"features_{i + 1}"
            )(x)
            if i in ends[:-1]:
                out[f"stage{ends.index(i) + 1}"] = x
        last = make_divisible(1280 * max(1.0, self.width_mult))
        x = conv_bn(last, 1, name=f"features_{len(blocks) + 1}")(x)
        # The 1x1 conv to 1280 channels belongs to the last (stride-32) level.
        out[f"stage{len(ends)}"] = x
        x = out["pre_logits"] = jnp.mean(x, axis=(1, 2))
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        out["logits"] = classifier_head(
            x, self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype,
            name="classifier_1",
        )  # fmt: skip
        return out


_register = partial(
    register_model, family="mobilenet", input_shape=(224, 224, 3), min_input_size=32
)


@_register(first_conv="stem/conv")
def mobilenet_v1(**kwargs) -> MobileNetV1:
    """MobileNet v1 (alpha = 1, 224x224): 4,231,976 parameters."""
    return MobileNetV1(**kwargs)


@_register(first_conv="features_0/conv")
def mobilenet_v2(**kwargs) -> MobileNetV2:
    """torchvision's MobileNetV2: 3,504,872 parameters."""
    return MobileNetV2(**kwargs)
