"""LeNet-5 (LeCun et al., 1998) as in the classic table: 32x32x1 input, tanh activations,
average pooling, conv 6@5x5 -> pool -> conv 16@5x5 -> pool -> conv 120@5x5 -> FC 84 -> FC."""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

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
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    head_name: ClassVar[str] = "fc2"

    def group_matcher(self) -> dict[str, str]:
        """One group per conv stage of `features()`, then fc1 and the fc2 head."""
        return {"stage{}": r"conv(\d)", "fc": r"fc1", "head": r"fc2"}

    @nn.compact
    def features(self, x: jax.Array, train: bool = False) -> dict[str, jax.Array]:
        check_input(x, model="lenet5", channels=self.in_channels, min_size=32)
        image = x.shape
        conv = lambda n, name: nn.Conv(
            n, (5, 5), padding="VALID", dtype=self.dtype, param_dtype=self.param_dtype, name=name
        )
        out = {}
        x = nn.tanh(conv(6, "conv1")(x))
        x = out["stage1"] = nn.avg_pool(x, (2, 2), (2, 2))
        x = nn.tanh(conv(16, "conv2")(x))
        x = out["stage2"] = nn.avg_pool(x, (2, 2), (2, 2))
        x = out["stage3"] = nn.tanh(conv(120, "conv3")(x))
        x = flatten(x)
        check_dense_inputs(self, "fc1", x, image)  # no adaptive pooling: the size is fixed
        x = nn.Dense(84, dtype=self.dtype, param_dtype=self.param_dtype, name="fc1")(x)
        x = out["pre_logits"] = nn.tanh(x)
        out["logits"] = classifier_head(
            x, self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype, name="fc2"
        )
        return out


@register_model(family="lenet", input_shape=(32, 32, 1), min_input_size=32, num_classes=10)
def lenet5(**kwargs) -> LeNet5:
    """LeNet-5 for 32x32 grayscale digits."""
    return LeNet5(**kwargs)
