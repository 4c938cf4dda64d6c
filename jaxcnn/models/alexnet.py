"""AlexNet in two forms.

- `alexnet_original`: the network of Krizhevsky, Sutskever & Hinton (2012), "ImageNet
  Classification with Deep Convolutional Neural Networks", on one device (no 2-GPU grouping):
  227x227x3 in, 96@11x11/4 valid, ReLU, LRN(5, 1e-4, 0.75, k=2) (section 3.3: after the
  ReLU), max-pool 3/2 (overlapping, section 3.4), 256@5x5 pad 2, ReLU, LRN, pool,
  384/384/256 @3x3 pad 1, pool -> 6x6x256, FC 4096, 4096, classes with dropout 0.5 before
  each of the first two FCs. 62,378,344 parameters.
- `alexnet`: exactly torchvision's `torchvision/models/alexnet.py` (the "One weird trick"
  variant: 64/192/384/256/256 filters, no LRN, adaptive avg-pool to 6x6). 61,100,840
  parameters.

Naming rule: `alexnet` mirrors torchvision's module paths with '.' -> '_'
(`features.3.weight` -> `params/features_3/kernel`, `classifier.4.bias` ->
`params/classifier_4/bias`); `alexnet_original` has no torchvision counterpart and uses the
paper's / Caffe's layer names `conv1`..`conv5`, `fc6`, `fc7`, `fc8`. Flatten is NHWC, so a
converter permutes the first FC's input axis from torch's CHW order.
"""

from __future__ import annotations

from functools import partial
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcnn.errors import InputError
from jaxcnn.models.layers import (
    Classifier,
    Dtype,
    LocalResponseNorm,
    adaptive_avg_pool,
    check_input,
    classifier_head,
    flatten,
    max_pool,
)
from jaxcnn.models.registry import register_model

# PyTorch's default Conv2d/Linear weight init, kaiming_uniform_(a=sqrt(5)), is
# U(-1/sqrt(fan_in), 1/sqrt(fan_in)), i.e. variance 1/(3 fan_in). Biases start at 0 here.
torch_default_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def _classifier(
    x: jax.Array,
    names: tuple[str, str, str],
    num_classes: int,
    dropout: float,
    train: bool,
    *,
    dtype: Dtype,
    param_dtype: Dtype,
) -> tuple[jax.Array, jax.Array]:
    """Dropout, FC 4096, ReLU, dropout, FC 4096, ReLU, FC: the head both AlexNets share.
    Returns (pre_logits, logits)."""
    dense = partial(
        nn.Dense, kernel_init=torch_default_kernel_init, dtype=dtype, param_dtype=param_dtype
    )
    x = nn.Dropout(dropout, deterministic=not train)(flatten(x))
    x = nn.relu(dense(4096, name=names[0])(x))
    x = nn.Dropout(dropout, deterministic=not train)(x)
    x = nn.relu(dense(4096, name=names[1])(x))
    logits = classifier_head(
        x,
        num_classes,
        kernel_init=torch_default_kernel_init,
        dtype=dtype,
        param_dtype=param_dtype,
        name=names[2],
    )
    return x, logits


class AlexNet(Classifier):
    """torchvision's AlexNet; any input of at least 63x63 (adaptive avg-pool to 6x6)."""

    head_name: ClassVar[str] = "classifier_6"

    num_classes: int = 1000
    dropout: float = 0.5
    in_channels: int = 3
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def group_matcher(self) -> dict[str, str]:
        """The five conv stages of `features()`, the two hidden FCs, the head."""
        stages = {f"stage{i}": f"features_{j}" for i, j in enumerate((0, 3, 6, 8, 10), 1)}
        return {**stages, "fc": r"classifier_[14]", "head": r"classifier_6"}

    @nn.compact
    def features(self, x: jax.Array, train: bool = False) -> dict[str, jax.Array]:
        check_input(x, model="alexnet", channels=self.in_channels, min_size=63)
        conv = partial(
            nn.Conv,
            kernel_init=torch_default_kernel_init,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )
        out = {}
        x = nn.relu(conv(64, (11, 11), (4, 4), padding=2, name="features_0")(x))
        x = out["stage1"] = max_pool(x, 3, 2)
        x = nn.relu(conv(192, (5, 5), padding=2, name="features_3")(x))
        x = out["stage2"] = max_pool(x, 3, 2)
        x = out["stage3"] = nn.relu(conv(384, (3, 3), padding=1, name="features_6")(x))
        x = out["stage4"] = nn.relu(conv(256, (3, 3), padding=1, name="features_8")(x))
        x = nn.relu(conv(256, (3, 3), padding=1, name="features_10")(x))
        x = out["stage5"] = max_pool(x, 3, 2)
        out["pre_logits"], out["logits"] = _classifier(
            adaptive_avg_pool(x, (6, 6)),
            ("classifier_1", "classifier_4", "classifier_6"),
            self.num_classes,
            self.dropout,
            train,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )
        return out


def _original_feature_size(size: int) -> int:
    """Side of the last feature map of `AlexNetOriginal` for a `size` x `size` input."""
    size = (size - 11) // 4 + 1  # conv1, valid
    for _ in range(3):  # three 3/2 max-pools; the padded convs keep the size
        size = (size - 3) // 2 + 1
    return size


class AlexNetOriginal(Classifier):
    """The 2012 AlexNet (single tower, LRN, fixed 227x227 input); 62,378,344 parameters."""

    head_name: ClassVar[str] = "fc8"

    num_classes: int = 1000
    dropout: float = 0.5
    in_channels: int = 3
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def group_matcher(self) -> dict[str, str]:
        """conv1..conv5 as stage1..stage5, fc6 and fc7, the fc8 head."""
        return {"stage{}": r"conv(\d)", "fc": r"fc[67]", "head": r"fc8"}

    @nn.compact
    def features(self, x: jax.Array, train: bool = False) -> dict[str, jax.Array]:
        check_input(x, model="alexnet_original", channels=self.in_channels, min_size=227)
        if _original_feature_size(x.shape[1]) != 6 or _original_feature_size(x.shape[2]) != 6:
            # No adaptive pooling in the paper: fc6 sees exactly 6x6x256 (sizes 227..258).
            raise InputError(
                f"alexnet_original has fixed-size FC layers and expects [batch, 227, 227, "
                f"{self.in_channels}] (any H, W in 227..258 gives the required 6x6 feature "
                f"map); got shape {tuple(x.shape)}. Resize to 227x227, or use `alexnet`, "
                f"which pools adaptively."
            )
        conv = partial(
            nn.Conv,
            kernel_init=torch_default_kernel_init,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )
        lrn = LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0)
        out = {}
        x = lrn(nn.relu(conv(96, (11, 11), (4, 4), padding="VALID", name="conv1")(x)))
        x = out["stage1"] = max_pool(x, 3, 2)
        x = lrn(nn.relu(conv(256, (5, 5), padding=2, name="conv2")(x)))
        x = out["stage2"] = max_pool(x, 3, 2)
        x = out["stage3"] = nn.relu(conv(384, (3, 3), padding=1, name="conv3")(x))
        x = out["stage4"] = nn.relu(conv(384, (3, 3), padding=1, name="conv4")(x))
        x = nn.relu(conv(256, (3, 3), padding=1, name="conv5")(x))
        x = out["stage5"] = max_pool(x, 3, 2)
        out["pre_logits"], out["logits"] = _classifier(
            x,
            ("fc6", "fc7", "fc8"),
            self.num_classes,
            self.dropout,
            train,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )
        return out


@register_model(family="alexnet", input_shape=(227, 227, 3), min_input_size=227)
def alexnet_original(**kwargs) -> AlexNetOriginal:
    """AlexNet as in the 2012 paper (LRN, 227x227 input): 62,378,344 parameters."""
    return AlexNetOriginal(**kwargs)


@register_model(family="alexnet", input_shape=(224, 224, 3), min_input_size=63)
def alexnet(**kwargs) -> AlexNet:
    """torchvision's AlexNet: 61,100,840 parameters."""
    return AlexNet(**kwargs)
