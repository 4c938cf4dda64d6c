"""LeNet-5 (LeCun et al., 1998) as in the classic table: 32x32x1 input, tanh activations,
average pooling, conv 6@5x5 -> pool -> conv 16@5x5 -> pool -> conv 120@5x5 -> FC 84 -> FC.

`activation` (default the paper's tanh), `kernel_init` and `bias_init` (default flax's
LeCun-normal kernels and zero biases) take names from `jaxcnn.models.activations` and
`jaxcnn.models.initializers`, for the course's activation and initialization ablations."""

from __future__ import annotations

from functools import partial
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcnn.models.activations import ActivationSpec, check_activation, get_activation
from jaxcnn.models.initializers import InitializerSpec, check_initializers, resolve_initializer
from jaxcnn.models.layers import (
    Classifier,
    Dtype,
    check_dense_inputs,
    check_input,
    classifier_head,
    flatten,
)
from jaxcnn.models.registry import register_model


class LeNet5(Classifier):
    """LeNet-5; 61,706 parameters with 10 classes."""

    num_classes: int = 10
    in_channels: int = 1
    activation: ActivationSpec = "tanh"
    kernel_init: InitializerSpec = None  # None: flax's default (LeCun normal)
    bias_init: InitializerSpec = None  # None: zeros
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    head_name: ClassVar[str] = "fc2"

    def __post_init__(self) -> None:
        check_activation(self.activation)
        check_initializers(self)
        super().__post_init__()

    def group_matcher(self) -> dict[str, str]:
        """One group per conv stage of `features()` (with its learned activation, if any),
        then fc1 and the fc2 head."""
        return {"stage{}": r"(?:conv|act)([123])", "fc": r"fc1|act4", "head": r"fc2"}

    @nn.compact
    def features(self, x: jax.Array, train: bool = False) -> dict[str, jax.Array]:
        check_input(x, model="lenet5", channels=self.in_channels, min_size=32)
        image = x.shape
        inits = dict(
            kernel_init=resolve_initializer(self.kernel_init, nn.linear.default_kernel_init),
            bias_init=resolve_initializer(self.bias_init, nn.initializers.zeros, bias=True),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )
        conv = partial(nn.Conv, kernel_size=(5, 5), padding="VALID", **inits)
        act = partial(get_activation, self.activation, param_dtype=self.param_dtype)
        out = {}
        x = act(name="act1")(conv(6, name="conv1")(x))
        x = out["stage1"] = nn.avg_pool(x, (2, 2), (2, 2))
        x = act(name="act2")(conv(16, name="conv2")(x))
        x = out["stage2"] = nn.avg_pool(x, (2, 2), (2, 2))
        x = out["stage3"] = act(name="act3")(conv(120, name="conv3")(x))
        x = flatten(x)
        check_dense_inputs(self, "fc1", x, image)  # no adaptive pooling: the size is fixed
        x = nn.Dense(84, name="fc1", **inits)(x)
        x = out["pre_logits"] = act(name="act4")(x)
        out["logits"] = classifier_head(x, self.num_classes, name="fc2", **inits)
        return out


@register_model(family="lenet", input_shape=(32, 32, 1), min_input_size=32, num_classes=10,
                first_conv="conv1")
def lenet5(**kwargs) -> LeNet5:
    """LeNet-5 for 32x32 grayscale digits."""
    return LeNet5(**kwargs)
