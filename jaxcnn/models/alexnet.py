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

Both take `activation` (default ReLU; a learned PReLU is named after the `nn.ReLU` it
replaces, `features_1`, ..., `classifier_5`, or `act1`..`act7` in `alexnet_original`),
`kernel_init` and `bias_init` (default torch's, below) by name: see
`jaxcnn.models.activations` and `jaxcnn.models.initializers`.

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
from jaxcnn.models.activations import ActivationSpec, check_activation, get_activation
from jaxcnn.models.initializers import (
    InitializerSpec,
    check_initializers,
    resolve_initializer,
    torch_default,
)
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


class AlexNetBase(Classifier):
    """Fields and helpers both AlexNets (and ZFNet) share; the parameter groups of Caffe's
    layer names (`alexnet` overrides them with torchvision's)."""

    head_name: ClassVar[str] = "fc8"

    num_classes: int = 1000
    dropout: float = 0.5
    in_channels: int = 3
    activation: ActivationSpec = "relu"
    # None: PyTorch's default Conv2d/Linear init, kaiming_uniform_(a=sqrt(5)), i.e.
    # U(-1/sqrt(fan_in), 1/sqrt(fan_in)); biases start at 0 here.
    kernel_init: InitializerSpec = None
    bias_init: InitializerSpec = None
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    default_kernel_init = staticmethod(torch_default)

    def __post_init__(self) -> None:
        check_activation(self.activation)
        check_initializers(self)
        super().__post_init__()

    def group_matcher(self) -> dict[str, str]:
        """Caffe's names (the paper's AlexNet, ZFNet): conv1..conv5 with their learned
        activations, if any, as stage1..stage5, fc6 and fc7, the fc8 head."""
        return {"stage{}": r"(?:conv|act)([1-5])", "fc": r"fc[67]|act[67]", "head": r"fc8"}

    def layer_kwargs(self) -> dict:
        """kernel_init, bias_init, dtype and param_dtype of every conv and dense layer."""
        return dict(
            kernel_init=resolve_initializer(self.kernel_init, self.default_kernel_init),
            bias_init=resolve_initializer(self.bias_init, nn.initializers.zeros, bias=True),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )

    def act(self, name: str):
        """The activation; a learned one becomes the child `name`."""
        return get_activation(self.activation, name=name, param_dtype=self.param_dtype)

    def head(
        self, x: jax.Array, names: tuple[str, ...], train: bool
    ) -> tuple[jax.Array, jax.Array]:
        """Dropout, FC 4096, act, dropout, FC 4096, act, FC: the head of AlexNet (and ZFNet).
        `names` = (fc, act, fc, act, fc). Returns (pre_logits, logits)."""
        layer = self.layer_kwargs()
        x = nn.Dropout(self.dropout, deterministic=not train)(flatten(x))
        x = self.act(names[1])(nn.Dense(4096, name=names[0], **layer)(x))
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        x = self.act(names[3])(nn.Dense(4096, name=names[2], **layer)(x))
        return x, classifier_head(x, self.num_classes, name=names[4], **layer)


class AlexNet(AlexNetBase):
    """torchvision's AlexNet; any input of at least 63x63 (adaptive avg-pool to 6x6)."""

    head_name: ClassVar[str] = "classifier_6"

    def group_matcher(self) -> dict[str, str]:
        """The five conv stages of `features()` (with the learned activations, if any), the
        two hidden FCs, the head."""
        stages = {f"stage{i}": f"features_({j}|{j + 1})"
                  for i, j in enumerate((0, 3, 6, 8, 10), 1)}
        return {**stages, "fc": r"classifier_[1245]", "head": r"classifier_6"}


    @nn.compact
    def features(self, x: jax.Array, train: bool = False) -> dict[str, jax.Array]:
        check_input(x, model="alexnet", channels=self.in_channels, min_size=63)
        conv = partial(nn.Conv, **self.layer_kwargs())
        act = self.act
        out = {}
        x = act("features_1")(conv(64, (11, 11), (4, 4), padding=2, name="features_0")(x))
        x = out["stage1"] = max_pool(x, 3, 2)
        x = act("features_4")(conv(192, (5, 5), padding=2, name="features_3")(x))
        x = out["stage2"] = max_pool(x, 3, 2)
        x = out["stage3"] = act("features_7")(conv(384, (3, 3), padding=1, name="features_6")(x))
        x = out["stage4"] = act("features_9")(conv(256, (3, 3), padding=1, name="features_8")(x))
        x = act("features_11")(conv(256, (3, 3), padding=1, name="features_10")(x))
        x = out["stage5"] = max_pool(x, 3, 2)
        out["pre_logits"], out["logits"] = self.head(
            adaptive_avg_pool(x, (6, 6)),
            ("classifier_1", "classifier_2", "classifier_4", "classifier_5", "classifier_6"),
            train,
        )
        return out


def _original_feature_size(size: int) -> int:
    """Side of the last feature map of `AlexNetOriginal` for a `size` x `size` input."""
    size = (size - 11) // 4 + 1  # conv1, valid
    for _ in range(3):  # three 3/2 max-pools; the padded convs keep the size
        size = (size - 3) // 2 + 1
    return size


class AlexNetOriginal(AlexNetBase):
    """The 2012 AlexNet (single tower, LRN, fixed 227x227 input); 62,378,344 parameters."""

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
        conv = partial(nn.Conv, **self.layer_kwargs())
        act = self.act
        lrn = LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0)
        out = {}
        x = lrn(act("act1")(conv(96, (11, 11), (4, 4), padding="VALID", name="conv1")(x)))
        x = out["stage1"] = max_pool(x, 3, 2)
        x = lrn(act("act2")(conv(256, (5, 5), padding=2, name="conv2")(x)))
        x = out["stage2"] = max_pool(x, 3, 2)
        x = out["stage3"] = act("act3")(conv(384, (3, 3), padding=1, name="conv3")(x))
        x = out["stage4"] = act("act4")(conv(384, (3, 3), padding=1, name="conv4")(x))
        x = act("act5")(conv(256, (3, 3), padding=1, name="conv5")(x))
        x = out["stage5"] = max_pool(x, 3, 2)
        out["pre_logits"], out["logits"] = self.head(
            x, ("fc6", "act6", "fc7", "act7", "fc8"), train
        )
        return out


@register_model(family="alexnet", input_shape=(227, 227, 3), min_input_size=227,
                first_conv="conv1")
def alexnet_original(**kwargs) -> AlexNetOriginal:
    """AlexNet as in the 2012 paper (LRN, 227x227 input): 62,378,344 parameters."""
    return AlexNetOriginal(**kwargs)


@register_model(family="alexnet", input_shape=(224, 224, 3), min_input_size=63,
                first_conv="features_0")
def alexnet(**kwargs) -> AlexNet:
    """torchvision's AlexNet: 61,100,840 parameters."""
    return AlexNet(**kwargs)
