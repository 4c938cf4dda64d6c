"""A small VGG-style CNN for the classic ablations on CIFAR-10 (the Keras/cs231n "simple
convnet"): three stages of two 3x3 convolutions and a 2x2 max pool, then global average
pooling and a linear head, with BatchNorm after each convolution and dropout before each
pool and the head as switches (`batch_norm`, `dropout`), and the activation and
initialization as names (`activation`, `kernel_init`, `bias_init`: see
`jaxcnn.models.activations` and `jaxcnn.models.initializers`)."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcnn.models.activations import ActivationSpec, check_activation, get_activation
from jaxcnn.models.initializers import InitializerSpec, check_initializers, resolve_initializer
from jaxcnn.models.layers import Classifier, Dtype, batch_norm, check_input, classifier_head
from jaxcnn.models.registry import register_model


class SmallCNN(Classifier):
    """conv-conv-pool x3 (width, 2*width, 4*width channels), GAP, FC; ~290k params at width 32."""

    num_classes: int = 10
    width: int = 32
    batch_norm: bool = True
    dropout: float = 0.0
    in_channels: int = 3  # 1 for grayscale data such as digits
    activation: ActivationSpec = "relu"
    kernel_init: InitializerSpec = None  # None: flax's default (LeCun normal)
    bias_init: InitializerSpec = None  # None: zeros
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def __post_init__(self) -> None:
        check_activation(self.activation)
        check_initializers(self)
        super().__post_init__()

    def group_matcher(self) -> dict[str, str]:
        """The three conv-conv-pool stages (with learned activations, if any) and the fc
        head."""
        return {"stage{}": r"stage(\d+)_(conv|bn|act)\d", "head": r"fc"}

    @nn.compact
    def features(self, x: jax.Array, train: bool = False) -> dict[str, jax.Array]:
        check_input(x, model="small_cnn", channels=self.in_channels, min_size=8)
        norm = batch_norm(train, dtype=self.dtype, param_dtype=self.param_dtype)
        inits = dict(
            kernel_init=resolve_initializer(self.kernel_init, nn.linear.default_kernel_init),
            bias_init=resolve_initializer(self.bias_init, nn.initializers.zeros, bias=True),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )
        conv = functools.partial(nn.Conv, kernel_size=(3, 3), padding=1,
                                 use_bias=not self.batch_norm, **inits)
        act = functools.partial(get_activation, self.activation, param_dtype=self.param_dtype)
        out = {}
        for stage in range(3):
            for i in range(2):
                name = f"stage{stage + 1}_conv{i + 1}"
                x = conv(self.width * 2**stage, name=name)(x)
                if self.batch_norm:
                    x = norm(name=f"stage{stage + 1}_bn{i + 1}")(x)
                x = act(name=f"stage{stage + 1}_act{i + 1}")(x)
            x = nn.max_pool(x, (2, 2), (2, 2))
            x = nn.Dropout(self.dropout, deterministic=not train)(x) if self.dropout else x
            out[f"stage{stage + 1}"] = x
        x = out["pre_logits"] = jnp.mean(x, axis=(1, 2))
        if self.dropout:
            x = nn.Dropout(self.dropout, deterministic=not train)(x)
        out["logits"] = classifier_head(x, self.num_classes, **inits)
        return out


@register_model(family="small_cnn", input_shape=(32, 32, 3), min_input_size=8, num_classes=10,
                first_conv="stage1_conv1")
def small_cnn(**kwargs) -> SmallCNN:
    """The ablation CNN; `batch_norm=False` / `dropout=0.3` / `activation="elu"` /
    `kernel_init="xavier_uniform"` select the variants."""
    return SmallCNN(**kwargs)
