"""ResNet (He et al., 2015, "Deep Residual Learning for Image Recognition") in the v1.5 form
of torchvision's `torchvision/models/resnet.py`: the stride of a bottleneck sits on its 3x3
conv, shortcuts are identities except where the shape changes (then conv1x1 + BN), BN eps
1e-5, convs initialised Kaiming-normal with fan_out, last BN gamma of each block at 1
(torchvision's default `zero_init_residual=False`). Also Wide ResNet (Zagoruyko & Komodakis,
2016) and ResNeXt (Xie et al., 2017) through `groups` and `width_per_group`.

Options beyond torchvision: `stem="cifar"` (3x3 stride-1 stem and no max-pool, for
32x32 inputs, as in section 4.2 of the paper), `skip=False` (the "plain" network of the same
depth, with no shortcut at all, for the paper's degradation experiment),
`stride_in_1x1=True` (the paper's v1 bottleneck, as its Caffe release: the stride on the first
1x1 conv, so the 3x3 runs at the lower resolution; Table 1's 3.8 / 7.6 / 11.3 x 10^9
multiply-adds for ResNet-50/101/152, against v1.5's 4.1 / 7.8 / 11.5; same parameters), and
`activation` / `kernel_init` by name (`jaxcnn.models.activations`,
`jaxcnn.models.initializers`; default ReLU and torchvision's init).

Submodule names mirror torchvision's state_dict so conversion is mechanical:
`layer1.0.downsample.1.running_mean` -> `batch_stats/layer1_0/downsample_1/mean`.
"""

from __future__ import annotations

from functools import partial
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcnn.errors import ConfigError
from jaxcnn.models.activations import ActivationSpec, check_activation, get_activation
from jaxcnn.models.initializers import (
    Initializer,
    InitializerSpec,
    check_initializers,
    kaiming_normal_fan_out,
    resolve_initializer,
)
from jaxcnn.models.layers import (
    Classifier,
    Dtype,
    ModuleDef,
    batch_norm,
    check_input,
    classifier_head,
    frozen_batch_norm,
    max_pool,
)
from jaxcnn.models.registry import register_model

NORMS = {"batch": batch_norm, "frozen": frozen_batch_norm}


def conv_layer(
    features: int,
    kernel: int,
    strides: int = 1,
    *,
    groups: int = 1,
    dtype: Dtype,
    param_dtype: Dtype,
    name: str,
    kernel_init: Initializer = kaiming_normal_fan_out,
) -> nn.Conv:
    """A bias-free conv with PyTorch's symmetric padding (kernel - 1) // 2 and, as
    torchvision, `kaiming_normal_(mode="fan_out", nonlinearity="relu")` init (not truncated)."""
    pad = (kernel - 1) // 2
    return nn.Conv(
        features,
        (kernel, kernel),
        (strides, strides),
        padding=((pad, pad), (pad, pad)),
        feature_group_count=groups,
        use_bias=False,
        kernel_init=kernel_init,
        dtype=dtype,
        param_dtype=param_dtype,
        name=name,
    )


def _shortcut(
    x: jax.Array, features: int, strides: int, conv: ModuleDef, norm: ModuleDef
) -> jax.Array:
    """Identity, or torchvision's `downsample` (conv1x1 + BN) where the shape changes."""
    if strides == 1 and x.shape[-1] == features:
        return x
    x = conv(features, 1, strides, name="downsample_0")(x)
    return norm(name="downsample_1")(x)


class BasicBlock(nn.Module):
    """Two 3x3 convs (ResNet-18/34); `filters` output channels. The stride is on the first
    conv in v1 and v1.5 alike (`stride_in_1x1` changes nothing here)."""

    filters: int
    conv: ModuleDef
    norm: ModuleDef
    strides: int = 1
    groups: int = 1
    width_per_group: int = 64
    skip: bool = True
    stride_in_1x1: bool = False
    act: ActivationSpec = "relu"

    expansion: ClassVar[int] = 1

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.groups != 1 or self.width_per_group != 64:
            # torchvision raises the same: grouped/wide variants exist only for bottlenecks.
            raise ConfigError(
                "BasicBlock supports only groups=1 and width_per_group=64, got "
                f"groups={self.groups}, width_per_group={self.width_per_group}; use "
                "block_cls=Bottleneck for ResNeXt / Wide ResNet."
            )
        y = self.conv(self.filters, 3, self.strides, name="conv1")(x)
        y = get_activation(self.act, name="act1")(self.norm(name="bn1")(y))
        y = self.conv(self.filters, 3, name="conv2")(y)
        y = self.norm(name="bn2")(y)
        if self.skip:
            y = y + _shortcut(x, self.filters, self.strides, self.conv, self.norm)
        return get_activation(self.act, name="act2")(y)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (stride here: v1.5; on the 1x1 with `stride_in_1x1`: v1), 1x1 expand
    to `4 * filters` channels."""

    filters: int
    conv: ModuleDef
    norm: ModuleDef
    strides: int = 1
    groups: int = 1
    width_per_group: int = 64
    skip: bool = True
    stride_in_1x1: bool = False
    act: ActivationSpec = "relu"

    expansion: ClassVar[int] = 4

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        width = int(self.filters * (self.width_per_group / 64.0)) * self.groups
        out_features = self.filters * self.expansion
        s1, s3 = (self.strides, 1) if self.stride_in_1x1 else (1, self.strides)
        y = self.conv(width, 1, s1, name="conv1")(x)
        y = get_activation(self.act, name="act1")(self.norm(name="bn1")(y))
        y = self.conv(width, 3, s3, groups=self.groups, name="conv2")(y)
        y = get_activation(self.act, name="act2")(self.norm(name="bn2")(y))
        y = self.conv(out_features, 1, name="conv3")(y)
        y = self.norm(name="bn3")(y)
        if self.skip:
            y = y + _shortcut(x, out_features, self.strides, self.conv, self.norm)
        return get_activation(self.act, name="act3")(y)


class ResNet(Classifier):
    """ResNet as data: `stage_sizes` blocks of `block_cls` per stage; stage i has
    `num_filters * 2**i` filters (times the block's expansion) and stride 2 except stage 1."""

    stage_sizes: tuple[int, ...]
    block_cls: ModuleDef = BasicBlock
    num_classes: int = 1000
    num_filters: int = 64
    groups: int = 1
    width_per_group: int = 64
    stem: str = "imagenet"  # "imagenet": 7x7/2 conv + 3x3/2 max-pool; "cifar": 3x3/1 conv
    skip: bool = True  # False: the "plain" network, no shortcuts at all
    stride_in_1x1: bool = False  # True: the paper's v1 bottleneck (see the module docstring)
    # "frozen": torchvision's FrozenBatchNorm2d, as its detection backbones; norm_eps its eps
    norm: str = "batch"
    norm_eps: float = 1e-5
    # No gradient flows into the first `frozen_stages` parts (1: the stem, 2: the stem and
    # layer1, ...): torchvision's `trainable_layers` = 5 - frozen_stages of a detection backbone.
    frozen_stages: int = 0
    in_channels: int = 3
    activation: ActivationSpec = "relu"
    kernel_init: InitializerSpec = None  # None: torchvision's Kaiming normal (fan_out)
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def __post_init__(self) -> None:
        check_activation(self.activation)
        check_initializers(self)
        super().__post_init__()

    def group_matcher(self) -> dict[str, str]:
        """Stem (with its learned activation, if any), torchvision's layer1..layer4, the fc
        head."""
        return {"stem": r"conv1|bn1|act1", "layer{}": r"layer(\d+)_\d+", "head": r"fc"}

    def _maybe_frozen(self, x: jax.Array, part: int) -> jax.Array:
        return jax.lax.stop_gradient(x) if part <= self.frozen_stages else x

    @property
    def min_input_size(self) -> int:
        """Smallest H (= W) for which the last stage is at least 1x1 without padding only."""
        stem_stride = {"imagenet": 4, "cifar": 1}[self.stem]
        return stem_stride * 2 ** (len(self.stage_sizes) - 1)

    @nn.compact
    def features(self, x: jax.Array, train: bool = False) -> dict[str, jax.Array]:
        if self.stem not in ("imagenet", "cifar"):
            raise ConfigError(f"ResNet stem must be 'imagenet' or 'cifar', got {self.stem!r}.")
        check_input(x, model="ResNet", channels=self.in_channels, min_size=self.min_input_size)
        kernel_init = resolve_initializer(self.kernel_init, kaiming_normal_fan_out)
        conv = partial(conv_layer, dtype=self.dtype, param_dtype=self.param_dtype,
                       kernel_init=kernel_init)
        if self.norm not in NORMS:
            raise ConfigError(f"ResNet norm must be one of {sorted(NORMS)}, got {self.norm!r}.")
        norm = NORMS[self.norm](
            train, dtype=self.dtype, param_dtype=self.param_dtype, epsilon=self.norm_eps
        )
        act = get_activation(self.activation, name="act1", param_dtype=self.param_dtype)
        out = {}
        if self.stem == "imagenet":
            x = conv(self.num_filters, 7, 2, name="conv1")(x)
            x = act(norm(name="bn1")(x))
            x = max_pool(x, 3, 2, padding=1)
        else:
            x = conv(self.num_filters, 3, 1, name="conv1")(x)
            x = act(norm(name="bn1")(x))
        x = out["stem"] = self._maybe_frozen(x, 1)
        for i, num_blocks in enumerate(self.stage_sizes):
            for j in range(num_blocks):
                x = self.block_cls(
                    filters=self.num_filters * 2**i,
                    strides=2 if i > 0 and j == 0 else 1,
                    groups=self.groups,
                    width_per_group=self.width_per_group,
                    skip=self.skip,
                    stride_in_1x1=self.stride_in_1x1,
                    act=self.activation,
                    conv=conv,
                    norm=norm,
                    name=f"layer{i + 1}_{j}",
                )(x)
            x = out[f"stage{i + 1}"] = self._maybe_frozen(x, i + 2)
        x = out["pre_logits"] = jnp.mean(x, axis=(1, 2))
        head_init = {} if self.kernel_init is None else {"kernel_init": kernel_init}
        out["logits"] = classifier_head(
            x, self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype, name="fc",
            **head_init,
        )
        return out


def _resnet(stage_sizes: tuple[int, ...], block_cls: ModuleDef, **kwargs) -> ResNet:
    return ResNet(stage_sizes=stage_sizes, block_cls=block_cls, **kwargs)


_register = partial(register_model, family="resnet", input_shape=(224, 224, 3), min_input_size=32,
                    first_conv="conv1")


@_register()
def resnet18(**kwargs) -> ResNet:
    """ResNet-18: 11,689,512 parameters."""
    return _resnet((2, 2, 2, 2), BasicBlock, **kwargs)


@_register()
def resnet34(**kwargs) -> ResNet:
    """ResNet-34: 21,797,672 parameters."""
    return _resnet((3, 4, 6, 3), BasicBlock, **kwargs)


@_register()
def resnet50(**kwargs) -> ResNet:
    """ResNet-50 (v1.5): 25,557,032 parameters."""
    return _resnet((3, 4, 6, 3), Bottleneck, **kwargs)


@_register()
def resnet101(**kwargs) -> ResNet:
    """ResNet-101 (v1.5): 44,549,160 parameters."""
    return _resnet((3, 4, 23, 3), Bottleneck, **kwargs)


@_register()
def resnet152(**kwargs) -> ResNet:
    """ResNet-152 (v1.5): 60,192,808 parameters."""
    return _resnet((3, 8, 36, 3), Bottleneck, **kwargs)


@_register()
def wide_resnet50_2(**kwargs) -> ResNet:
    """Wide ResNet-50-2 (bottleneck width doubled): 68,883,240 parameters."""
    return _resnet((3, 4, 6, 3), Bottleneck, **{"width_per_group": 128, **kwargs})


@_register()
def resnext50_32x4d(**kwargs) -> ResNet:
    """ResNeXt-50 32x4d (grouped 3x3 convs): 25,028,904 parameters."""
    return _resnet((3, 4, 6, 3), Bottleneck, **{"groups": 32, "width_per_group": 4, **kwargs})


def _tiny_resnet(**kwargs) -> ResNet:
    """Two one-block stages of 8 filters with the cifar stem: for fast tests, not registered."""
    return ResNet(
        **{"stage_sizes": (1, 1), "num_filters": 8, "stem": "cifar", "num_classes": 10, **kwargs}
    )
