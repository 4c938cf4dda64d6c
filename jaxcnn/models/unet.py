"""U-Net (Ronneberger et al., 2015) as in the classic Keras listing (`get_unet` with
`conv2d_block`): an encoder of conv blocks with `n_filters` x {1, 2, 4, 8, 16} channels, each
block two 3x3 'same' convs (He-normal init, optional BN) with ReLU, 2x2 max-pool and dropout
between levels; a decoder of 3x3 stride-2 transposed convs whose output is concatenated with the
encoder feature of the same size, then dropout and a conv block; a 1x1 conv head.

The listing ends in a sigmoid; here the model returns LOGITS (numerically stable losses take
logits) and `probabilities` applies the listing's sigmoid (1 class) or a softmax (several).
Keras defaults are kept where the listing relies on them: conv biases even before BN, BN eps
1e-3, Glorot-uniform transposed convs; BN momentum is PyTorch's 0.1 (flax 0.9) as elsewhere.
`activation` and `kernel_init` (of the 3x3 convs) take other names from
`jaxcnn.models.activations` / `jaxcnn.models.initializers`.
"""

from __future__ import annotations

from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcnn.errors import InputError
from jaxcnn.models.activations import ActivationSpec, check_activation, get_activation
from jaxcnn.models.initializers import (
    Initializer,
    InitializerSpec,
    check_initializers,
    resolve_initializer,
)
from jaxcnn.models.layers import Dtype, ModuleDef, batch_norm, check_input
from jaxcnn.models.registry import register_model

LEVELS = 4  # max-pools of 2: H and W must be multiples of 2**LEVELS = 16


class ConvBlock(nn.Module):
    """The listing's `conv2d_block`: (3x3 'same' conv -> [BN] -> ReLU) twice."""

    features: int
    norm: ModuleDef | None
    act: ActivationSpec = "relu"
    kernel_init: Initializer = nn.initializers.he_normal()  # Keras' he_normal (truncated)
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for i in (1, 2):
            x = nn.Conv(
                self.features,
                (3, 3),
                padding="SAME",
                kernel_init=self.kernel_init,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name=f"conv{i}",
            )(x)
            if self.norm is not None:
                x = self.norm(name=f"bn{i}")(x)
            x = get_activation(self.act, name=f"act{i}", param_dtype=self.param_dtype)(x)
        return x


class UNet(nn.Module):
    """U-Net for segmentation: [B, H, W, in_channels] -> logits [B, H, W, num_classes], with
    H and W multiples of 16."""

    num_classes: int = 1
    n_filters: int = 16
    batch_norm: bool = True
    dropout: float = 0.1
    in_channels: int = 3
    activation: ActivationSpec = "relu"
    kernel_init: InitializerSpec = None  # None: Keras' he_normal, as the listing
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def __post_init__(self) -> None:
        check_activation(self.activation)
        check_initializers(self)
        super().__post_init__()

    @nn.compact
    def features(self, x: jax.Array, train: bool = False) -> dict[str, jax.Array]:
        """Encoder levels "stage1".."stage5" (stage5 is the bottleneck), decoder levels
        "decoder4".."decoder1" (decoderK has stage K's size), and "logits"."""
        check_input(x, model="unet", channels=self.in_channels, min_size=2**LEVELS)
        if x.shape[1] % 2**LEVELS or x.shape[2] % 2**LEVELS:
            up = lambda n: -(-n // 2**LEVELS) * 2**LEVELS
            raise InputError(
                f"unet needs H and W to be multiples of {2**LEVELS} ({LEVELS} max-pools of 2 "
                f"whose outputs are concatenated back at the same size); got shape "
                f"{tuple(x.shape)}. Pad or resize the images, e.g. to "
                f"{up(x.shape[1])}x{up(x.shape[2])}."
            )
        norm = (
            batch_norm(train, dtype=self.dtype, param_dtype=self.param_dtype, epsilon=1e-3)
            if self.batch_norm
            else None
        )
        kernel_init = resolve_initializer(self.kernel_init, nn.initializers.he_normal())
        block = partial(ConvBlock, norm=norm, act=self.activation, kernel_init=kernel_init,
                        dtype=self.dtype, param_dtype=self.param_dtype)
        drop = nn.Dropout(self.dropout, deterministic=not train)
        out = {}
        skips = []
        for level in range(LEVELS):
            x = block(self.n_filters * 2**level, name=f"encoder{level + 1}")(x)
            skips.append(x)
            out[f"stage{level + 1}"] = x
            x = drop(nn.max_pool(x, (2, 2), (2, 2)))
        x = out[f"stage{LEVELS + 1}"] = block(self.n_filters * 2**LEVELS, name="bottleneck")(x)
        for level in reversed(range(LEVELS)):
            features = self.n_filters * 2**level
            x = nn.ConvTranspose(
                features,
                (3, 3),
                (2, 2),
                padding="SAME",
                kernel_init=nn.initializers.glorot_uniform(),
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name=f"upconv{level + 1}",
            )(x)
            x = drop(jnp.concatenate([x, skips[level]], axis=-1))
            x = out[f"decoder{level + 1}"] = block(features, name=f"decoder{level + 1}")(x)
        logits = nn.Conv(
            self.num_classes, (1, 1), dtype=self.dtype, param_dtype=self.param_dtype, name="head"
        )(x)
        out["logits"] = logits.astype(jnp.float32)
        return out

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Per-pixel logits [B, H, W, num_classes] (float32)."""
        return self.features(x, train=train)["logits"]

    def probabilities(self, x: jax.Array, train: bool = False) -> jax.Array:
        """The listing's output: sigmoid of the logits for 1 class, softmax over classes
        otherwise. Call with `model.apply(variables, x, method=model.probabilities)`."""
        logits = self(x, train=train)
        if self.num_classes == 1:
            return jax.nn.sigmoid(logits)
        return jax.nn.softmax(logits, axis=-1)


@register_model(
    family="unet", task="segmentation", input_shape=(128, 128, 3), min_input_size=16, num_classes=1
)
def unet(**kwargs) -> UNet:
    """U-Net with 16 base filters, BN and dropout 0.1 (the listing's defaults): 2,161,649
    parameters and 2,944 BN statistics for 3 input channels and 1 class."""
    return UNet(**kwargs)
