"""GoogLeNet / Inception v1 (Szegedy et al., 2014, "Going Deeper with Convolutions") exactly
as torchvision's `torchvision/models/googlenet.py`:

- every conv is a `BasicConv2d` (conv without bias + BN with eps 1e-3 + ReLU: `ConvBNAct`);
- all max-pools use `ceil_mode=True`, so odd sizes round up as in PyTorch;
- the "5x5" branch (`branch3`) uses a 3x3 kernel: a known torchvision quirk
  (pytorch/vision#906) that its pretrained weights depend on, so it is matched, not fixed;
- the auxiliary classifiers pool with `adaptive_avg_pool2d(4, 4)` as torchvision does. This
  is NOT the paper's avg-pool 5x5/3: both give 4x4 from 14x14, but the adaptive windows are
  4 wide (rows 0-3, 3-6, 7-10, 10-13), not 5;
- `transform_input=True` maps ImageNet-normalized inputs to the (x - 0.5) / 0.5
  normalization the original (Google) weights expect, as torchvision's `_transform_input`;
- init as torchvision: conv and linear weights N(0, 0.01), BN scale 1 and bias 0.

Paper options (off by default, so torchvision's weights keep loading): `inception_5x5=True`
gives the third branch its true 5x5 kernel (figure 2(b) of the paper), and
`aux_pool="paper"` pools the auxiliary heads with a 5x5 stride-3 average pool (section 5);
`activation` swaps ReLU for any name in `jaxcnn.models.activations`, `kernel_init` the
N(0, 0.01) conv and linear weights for any name in `jaxcnn.models.initializers`. The
standalone modules
`InceptionNaive` (figure 2(a): 1x1, 3x3 and 5x5 convs and a 3x3 max-pool, concatenated) and
`Inception(..., kernel5=5)` (figure 2(b)) default to the paper's plain conv + ReLU layers.

The two auxiliary heads run only when `train=True` (and are built at init so their
parameters exist); `__call__` then returns `AuxOutputs(logits, (aux1, aux2), aux_weight=0.3)`,
in eval plain logits. 13,004,888 parameters with the aux heads, 6,624,904 without.

Naming rule: torchvision's module paths with '.' -> '_' inside names where it uses
Sequential indices; a `BasicConv2d` has children `conv` and `bn`:
`inception3a.branch2.0.conv.weight` -> `params/inception3a/branch2_0/conv/kernel`,
`aux1.conv.bn.running_var` -> `batch_stats/aux1/conv/bn/var`, `aux1.fc1.weight` ->
`params/aux1/fc1/kernel`. Flatten is NHWC, so a converter permutes `aux{1,2}.fc1.weight`'s
input axis from torch's CHW order (`fc` sees a 1x1 pooled map and needs no permutation).
"""

from __future__ import annotations

from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn.errors import ConfigError, InputError
from jaxcnn.models.activations import ActivationSpec, check_activation, get_activation
from jaxcnn.models.initializers import (
    Initializer,
    InitializerSpec,
    check_initializers,
    resolve_initializer,
)
from jaxcnn.models.layers import (
    AuxOutputs,
    Classifier,
    ConvBNAct,
    Dtype,
    ModuleDef,
    adaptive_avg_pool,
    batch_norm,
    check_input,
    classifier_head,
    flatten,
    max_pool,
)
from jaxcnn.models.registry import register_model

# torchvision: trunc_normal_(std=0.01, a=-2, b=2); the bounds are absolute (200 std), so this
# is a plain normal distribution.
weight_init = nn.initializers.normal(0.01)

# Inception blocks in order: (ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj), Table 1.
INCEPTION_BLOCKS: tuple[tuple[str, tuple[int, int, int, int, int, int]], ...] = (
    ("3a", (64, 96, 128, 16, 32, 32)),
    ("3b", (128, 128, 192, 32, 96, 64)),
    ("4a", (192, 96, 208, 16, 48, 64)),
    ("4b", (160, 112, 224, 24, 64, 64)),
    ("4c", (128, 128, 256, 24, 64, 64)),
    ("4d", (112, 144, 288, 32, 64, 64)),
    ("4e", (256, 160, 320, 32, 128, 128)),
    ("5a", (256, 160, 320, 32, 128, 128)),
    ("5b", (384, 192, 384, 48, 128, 128)),
)
POOL_BEFORE = {"4a": (3, 2), "5a": (2, 2)}  # torchvision's maxpool3 / maxpool4 (window, stride)
AUX_AFTER = {"4a": "aux1", "4d": "aux2"}

# torchvision's `_transform_input`: x * (std / 0.5) + (mean - 0.5) / 0.5 per channel.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def transform_input(x: jax.Array) -> jax.Array:
    """Map ImageNet-normalized NHWC RGB input to (pixel - 0.5) / 0.5 normalization."""
    scale = np.array([s / 0.5 for s in IMAGENET_STD], np.float32).reshape(1, 1, 1, 3)
    shift = np.array([(m - 0.5) / 0.5 for m in IMAGENET_MEAN], np.float32).reshape(1, 1, 1, 3)
    return x * scale.astype(x.dtype) + shift.astype(x.dtype)


class ConvReLU(nn.Module):
    """The paper's layer: a 'same' conv with bias followed by ReLU (no BatchNorm, which
    GoogLeNet predates); the signature of `ConvBNAct` (features, kernel_size, strides)."""

    features: int
    kernel_size: int = 1
    strides: int = 1
    act: ActivationSpec = "relu"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        pad = (self.kernel_size - 1) // 2
        x = nn.Conv(self.features, (self.kernel_size, self.kernel_size),
                    (self.strides, self.strides), padding=((pad, pad), (pad, pad)),
                    dtype=self.dtype, param_dtype=self.param_dtype, name="conv")(x)
        return get_activation(self.act, name="act", param_dtype=self.param_dtype)(x)


class Inception(nn.Module):
    """Four parallel branches concatenated on channels: 1x1; 1x1 -> 3x3; 1x1 -> 5x5;
    3x3/1 max-pool -> 1x1 (figure 2(b), "with dimension reductions"). `kernel5` is the
    kernel of the "5x5" branch: 3 inside `googlenet` by default, as torchvision
    (vision#906, its weights depend on it), 5 as in the paper."""

    ch1x1: int
    ch3x3red: int
    ch3x3: int
    ch5x5red: int
    ch5x5: int
    pool_proj: int
    conv: ModuleDef = ConvReLU
    kernel5: int = 5

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        branch1 = self.conv(self.ch1x1, 1, name="branch1")(x)
        branch2 = self.conv(self.ch3x3red, 1, name="branch2_0")(x)
        branch2 = self.conv(self.ch3x3, 3, name="branch2_1")(branch2)
        branch3 = self.conv(self.ch5x5red, 1, name="branch3_0")(x)
        branch3 = self.conv(self.ch5x5, self.kernel5, name="branch3_1")(branch3)
        branch4 = max_pool(x, 3, 1, padding=1, ceil_mode=True)
        branch4 = self.conv(self.pool_proj, 1, name="branch4_1")(branch4)
        return jnp.concatenate([branch1, branch2, branch3, branch4], axis=-1)


class InceptionNaive(nn.Module):
    """The naive Inception module (figure 2(a)): 1x1, 3x3 and 5x5 'same' convs and a 3x3/1
    max-pool side by side, concatenated, so the output depth is ch1x1 + ch3x3 + ch5x5 + the
    input depth (672 for 128/192/96 on 28x28x256)."""

    ch1x1: int
    ch3x3: int
    ch5x5: int
    conv: ModuleDef = ConvReLU

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        branches = [
            self.conv(self.ch1x1, 1, name="branch1")(x),
            self.conv(self.ch3x3, 3, name="branch2")(x),
            self.conv(self.ch5x5, 5, name="branch3")(x),
            max_pool(x, 3, 1, padding=1),
        ]
        return jnp.concatenate(branches, axis=-1)


AUX_POOLS = ("adaptive", "paper")


class InceptionAux(nn.Module):
    """Auxiliary classifier: avg-pool to 4x4 (torchvision's adaptive pool, or the paper's
    5x5 stride 3), 1x1 BasicConv2d 128, FC 1024 + act, dropout, FC."""

    num_classes: int
    conv: ModuleDef
    dropout: float = 0.7
    pool: str = "adaptive"
    act: ActivationSpec = "relu"
    kernel_init: Initializer = weight_init
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        if self.pool == "paper":
            if min(x.shape[1:3]) < 5:
                raise InputError(
                    f"googlenet with aux_pool='paper' pools the auxiliary heads 5x5 and needs "
                    f"feature maps of at least 5x5 there; got {x.shape[1]}x{x.shape[2]} "
                    f"(inputs of at least 65x65 give them; 224x224 gives 14x14 -> 4x4)."
                )
            x = nn.avg_pool(x, (5, 5), (3, 3))
        else:
            x = adaptive_avg_pool(x, (4, 4))
        x = self.conv(128, 1, name="conv")(x)
        x = nn.Dense(
            1024,
            kernel_init=self.kernel_init,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="fc1",
        )(flatten(x))
        x = get_activation(self.act, name="act", param_dtype=self.param_dtype)(x)
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return classifier_head(
            x,
            self.num_classes,
            kernel_init=self.kernel_init,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="fc2",
        )


class GoogLeNet(Classifier):
    """torchvision's GoogLeNet; inputs of at least 15x15."""

    num_classes: int = 1000
    aux_logits: bool = True
    transform_input: bool = False
    aux_weight: float = 0.3  # weight of each auxiliary loss (section 5 of the paper)
    dropout: float = 0.2
    dropout_aux: float = 0.7
    in_channels: int = 3
    inception_5x5: bool = False  # True: the paper's 5x5 kernel in branch 3 (torchvision: 3x3)
    aux_pool: str = "adaptive"  # "paper": avg-pool 5x5 stride 3 in the auxiliary heads
    activation: ActivationSpec = "relu"
    kernel_init: InitializerSpec = None  # None: torchvision's N(0, 0.01)
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def __post_init__(self) -> None:
        check_activation(self.activation)
        check_initializers(self)
        if self.aux_pool not in AUX_POOLS:
            raise ConfigError(f"googlenet aux_pool must be one of {AUX_POOLS}; got "
                              f"{self.aux_pool!r}.")
        super().__post_init__()

    def group_matcher(self) -> dict[str, str]:
        """The stem convs, inception3/4/5 as stage3..stage5, the head with its aux heads."""
        return {"stem": r"conv\d", "stage{}": r"inception(\d)[a-e]", "head": r"fc|aux\d"}

    @nn.compact
    def features(self, x: jax.Array, train: bool = False) -> dict[str, jax.Array]:
        check_input(x, model="googlenet", channels=self.in_channels, min_size=15)
        if self.transform_input:
            x = transform_input(x)
        norm = batch_norm(train, dtype=self.dtype, param_dtype=self.param_dtype, epsilon=1e-3)
        kernel_init = resolve_initializer(self.kernel_init, weight_init)
        conv = partial(
            ConvBNAct,
            norm=norm,
            act=self.activation,
            kernel_init=kernel_init,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )
        # Aux heads also run at init (in eval mode too) so that their parameters exist.
        run_aux = self.aux_logits and (train or self.is_initializing())
        out = {}
        x = conv(64, 7, 2, name="conv1")(x)
        x = max_pool(x, 3, 2, ceil_mode=True)
        x = conv(64, 1, name="conv2")(x)
        x = conv(192, 3, name="conv3")(x)
        x = out["stem"] = max_pool(x, 3, 2, ceil_mode=True)
        for block, channels in INCEPTION_BLOCKS:
            if block in POOL_BEFORE:
                x = max_pool(x, *POOL_BEFORE[block], ceil_mode=True)
            x = Inception(*channels, conv=conv, kernel5=5 if self.inception_5x5 else 3,
                          name=f"inception{block}")(x)
            out[f"inception{block}"] = x
            if run_aux and block in AUX_AFTER:
                aux = InceptionAux(
                    self.num_classes,
                    conv=conv,
                    dropout=self.dropout_aux,
                    pool=self.aux_pool,
                    act=self.activation,
                    kernel_init=kernel_init,
                    dtype=self.dtype,
                    param_dtype=self.param_dtype,
                    name=AUX_AFTER[block],
                )(x, train=train)
                if train:
                    out[AUX_AFTER[block]] = aux
        x = out["pre_logits"] = jnp.mean(x, axis=(1, 2))
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        out["logits"] = classifier_head(
            x,
            self.num_classes,
            kernel_init=kernel_init,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="fc",
        )
        return out

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array | AuxOutputs:
        """Logits; in training with `aux_logits`, `AuxOutputs(logits, (aux1, aux2))`."""
        out = self.features(x, train=train)
        if train and self.aux_logits:
            return AuxOutputs(out["logits"], (out["aux1"], out["aux2"]), self.aux_weight)
        return out["logits"]


@register_model(family="googlenet", input_shape=(224, 224, 3), min_input_size=15,
                first_conv="conv1/conv")
def googlenet(**kwargs) -> GoogLeNet:
    """GoogLeNet (Inception v1) as torchvision: 13,004,888 parameters (6,624,904 without
    `aux_logits`)."""
    return GoogLeNet(**kwargs)
