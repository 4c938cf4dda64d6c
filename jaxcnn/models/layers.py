"""Blocks shared by several families, written to match PyTorch's semantics exactly
(padding, ceil-mode pooling, adaptive pooling, LRN, BatchNorm momentum and running
statistics) so that converted torchvision weights give the same outputs and fine-tune the
same way."""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from typing import Any, ClassVar

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn.errors import InputError
from jaxcnn.models.activations import ActivationSpec, check_activation, get_activation
from jaxcnn.models.initializers import (
    InitializerSpec,
    check_initializers,
    resolve_initializer,
)

ModuleDef = Any
Dtype = Any

# PyTorch's BatchNorm momentum 0.1 (new = 0.9 old + 0.1 batch) is flax's momentum=0.9.
BN_MOMENTUM = 0.9


class BatchNorm(nn.Module):
    """`torch.nn.BatchNorm2d` over the last axis, running statistics included: training
    normalizes with the batch mean and BIASED variance, and updates `running_var` with the
    UNBIASED one, var * n / (n - 1) for n values per channel (torch's `batch_norm` kernel;
    flax's `nn.BatchNorm` uses the biased one). `momentum` is flax's (0.9 = torch's 0.1).

    n is the number of reduced values per channel of the whole batch: under `jax.jit` with a
    sharded batch that is the global batch; with `axis_name` (pmap / shard_map) the local
    count times the axis size. Variables and their names are flax's: params `scale`, `bias`,
    batch_stats `mean`, `var` (float32). Statistics are computed in float32 as flax does
    (fast variance E[x^2] - E[x]^2, clipped at 0), and not updated at init."""

    use_running_average: bool | None = None
    momentum: float = BN_MOMENTUM
    epsilon: float = 1e-5
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    use_bias: bool = True
    use_scale: bool = True
    bias_init: Callable[..., jax.Array] = nn.initializers.zeros
    scale_init: Callable[..., jax.Array] = nn.initializers.ones
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array, use_running_average: bool | None = None) -> jax.Array:
        use_running_average = nn.merge_param(
            "use_running_average", self.use_running_average, use_running_average
        )
        features = x.shape[-1]
        axes = tuple(range(x.ndim - 1))
        ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (features,), jnp.float32)
        ra_var = self.variable("batch_stats", "var", jnp.ones, (features,), jnp.float32)
        if use_running_average:
            mean, var = ra_mean.value, ra_var.value
        else:
            x32 = x.astype(jnp.promote_types(x.dtype, jnp.float32))
            mean, mean2 = x32.mean(axes), jnp.square(x32).mean(axes)
            count = math.prod(x.shape[:-1])
            if self.axis_name is not None and not self.is_initializing():
                mean, mean2 = jax.lax.pmean((mean, mean2), self.axis_name)
                count *= jax.lax.psum(1, self.axis_name)
            var = jnp.maximum(0.0, mean2 - jnp.square(mean))
            if not self.is_initializing():
                # n == 1 has a zero biased variance; torch refuses it, the factor is moot.
                unbiased = var * (count / jnp.maximum(count - 1, 1))
                ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
                ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * unbiased
        # flax's `_normalize`, step for step, so eval-mode outputs are unchanged bit for bit.
        bshape = (1,) * (x.ndim - 1) + (features,)
        y = x - mean.reshape(bshape)
        mul = jax.lax.rsqrt(var.reshape(bshape) + self.epsilon)
        args = [x]
        if self.use_scale:
            scale = self.param("scale", self.scale_init, (features,), self.param_dtype)
            mul = mul * scale.reshape(bshape)
            args.append(scale)
        y = y * mul
        if self.use_bias:
            bias = self.param("bias", self.bias_init, (features,), self.param_dtype)
            y = y + bias.reshape(bshape)
            args.append(bias)
        return jnp.asarray(y, self.dtype or jnp.result_type(*args))


def batch_norm(
    train: bool, *, dtype: Dtype, param_dtype: Dtype, epsilon: float = 1e-5
) -> Callable[..., BatchNorm]:
    """BatchNorm factory with PyTorch's defaults; statistics in the `batch_stats` collection."""
    return functools.partial(
        BatchNorm,
        use_running_average=not train,
        momentum=BN_MOMENTUM,
        epsilon=epsilon,
        dtype=dtype,
        param_dtype=param_dtype,
    )


class FrozenBatchNorm(nn.Module):
    """torchvision's `FrozenBatchNorm2d` (the detection backbones' norm): y = x * s + (b - m * s)
    with s = w / sqrt(v + eps), all four vectors fixed. They live in `batch_stats` (scale, bias,
    mean, var), so they are never trained or counted as parameters, as torchvision's buffers."""

    epsilon: float = 1e-5
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    use_running_average: bool = True  # the BatchNorm factory's keyword; always frozen

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        fixed = {
            name: self.variable("batch_stats", name, fill, (c,), self.param_dtype).value
            for name, fill in (("scale", jnp.ones), ("bias", jnp.zeros), ("mean", jnp.zeros),
                               ("var", jnp.ones))
        }
        scale = fixed["scale"] * jax.lax.rsqrt(fixed["var"] + self.epsilon)
        shift = fixed["bias"] - fixed["mean"] * scale
        bshape = (1,) * (x.ndim - 1) + (c,)
        scale, shift = scale.reshape(bshape), shift.reshape(bshape)
        return (x * scale.astype(self.dtype) + shift.astype(self.dtype)).astype(self.dtype)


def frozen_batch_norm(
    train: bool, *, dtype: Dtype, param_dtype: Dtype, epsilon: float = 1e-5
) -> Callable[..., FrozenBatchNorm]:
    """`batch_norm`'s signature for `FrozenBatchNorm` (`train` changes nothing)."""
    del train
    return functools.partial(
        FrozenBatchNorm, epsilon=epsilon, dtype=dtype, param_dtype=param_dtype
    )


def check_input(
    x: jax.Array, *, model: str, channels: int | None, min_size: int
) -> None:
    """Raise `InputError` unless `x` is a float NHWC batch with `channels` channels and
    H, W >= `min_size`. Runs at trace time (shapes and dtypes are static)."""
    expected = f"[batch, H, W, {channels if channels else 'C'}] with H, W >= {min_size}"
    shape = tuple(getattr(x, "shape", ()))
    if len(shape) != 4:
        hint = " Add a batch axis with x[None]." if len(shape) == 3 else ""
        raise InputError(
            f"{model} expects a rank-4 NHWC float array {expected}; got shape {shape}.{hint}"
        )
    if shape[0] == 0:
        raise InputError(
            f"{model} expects at least one image; got an empty batch {shape}. Pass at least one "
            "image (a batch of 0 has no BatchNorm statistics and no flattened size)."
        )
    dtype = jnp.dtype(x.dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise InputError(
            f"{model} expects floating-point pixels, got dtype {dtype}. Integer images are "
            f"never cast silently: convert them with x.astype('float32') / 255 and normalize "
            f"(or jaxcnn.data.normalize(x, mean, std) with mean/std on the 0..255 scale)."
        )
    if channels is not None and shape[-1] != channels:
        hint = ""
        if shape[1] == channels and shape[-1] != channels:
            hint = " It looks like NCHW: transpose with x.transpose(0, 2, 3, 1)."
        raise InputError(
            f"{model} expects {channels} input channel(s) {expected}; got shape {shape}.{hint}"
        )
    if shape[1] < min_size or shape[2] < min_size:
        raise InputError(
            f"{model} needs inputs of at least {min_size}x{min_size} pixels {expected}; got "
            f"shape {shape}. Resize the images (jax.image.resize) before calling the model."
        )


def conv_output_size(
    size: int | tuple[int, ...],
    kernel: int | tuple[int, ...],
    stride: int | tuple[int, ...] = 1,
    padding: int | tuple[int | tuple[int, int], ...] = 0,
    dilation: int | tuple[int, ...] = 1,
) -> int | tuple[int, ...]:
    """Output size of a convolution or pooling window, floor((M + 2P - K) / S) + 1 per axis
    (K -> D (K - 1) + 1 when dilated; a (low, high) padding pair adds low + high). Each
    argument is one int or one value per axis; returns an int for an int `size`."""
    axes = len(size) if isinstance(size, tuple | list) else 1

    def per_axis(value: Any, what: str) -> list:
        values = list(value) if isinstance(value, tuple | list) else [value] * axes
        if len(values) != axes:
            raise InputError(
                f"conv_output_size: {what} has {len(values)} values for {axes} axes; give "
                f"one int or one value per axis."
            )
        return values

    out = []
    for m, k, s, p, d in zip(
        per_axis(size, "size"), per_axis(kernel, "kernel"), per_axis(stride, "stride"),
        per_axis(padding, "padding"), per_axis(dilation, "dilation"), strict=True,
    ):  # fmt: skip
        low, high = (p, p) if isinstance(p, int) else p
        span = m + low + high - (d * (k - 1) + 1)
        if s < 1 or span < 0:
            raise InputError(
                f"conv_output_size: a {k}-wide window (dilation {d}) does not fit an input of "
                f"{m} with padding ({low}, {high}) and stride {s}; pad more or use a smaller "
                f"kernel (the stride must be >= 1)."
            )
        out.append(span // s + 1)
    return out[0] if not isinstance(size, tuple | list) else tuple(out)


def _pool_out_size(size: int, window: int, stride: int, padding: int, ceil_mode: bool) -> int:
    """PyTorch's pooling output size, including its ceil-mode rule that the last window
    must start inside the input or the left padding."""
    span = size + 2 * padding - window
    out = math.ceil(span / stride) + 1 if ceil_mode else conv_output_size(
        size, window, stride, padding
    )
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def max_pool(
    x: jax.Array,
    window: int | tuple[int, int],
    stride: int | tuple[int, int],
    padding: int | tuple[int, int] = 0,
    ceil_mode: bool = False,
) -> jax.Array:
    """`torch.nn.MaxPool2d(window, stride, padding, ceil_mode)` on NHWC input; each of
    window, stride and padding is one int or an (H, W) pair, as in torch."""
    pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)
    windows, strides, paddings = pair(window), pair(stride), pair(padding)
    pads = []
    for size, k, s, p in zip(x.shape[1:3], windows, strides, paddings, strict=True):
        out = _pool_out_size(size, k, s, p, ceil_mode)
        extra = max(0, (out - 1) * s + k - size - 2 * p)
        pads.append((p, p + extra))
    return nn.max_pool(x, windows, strides, padding=pads)


def adaptive_avg_pool(x: jax.Array, output_size: tuple[int, int]) -> jax.Array:
    """`torch.nn.AdaptiveAvgPool2d(output_size)` on NHWC input: cell i averages rows
    floor(i*H/out) .. ceil((i+1)*H/out), also when H is not a multiple of out."""
    _, height, width, _ = x.shape
    out_h, out_w = output_size
    if (height, width) == (out_h, out_w):  # one value per cell: the identity
        return x
    # One named scope: `jaxcnn.summary` reports the pool as one layer, however computed.
    with jax.named_scope("adaptive_avg_pool"):
        if (out_h, out_w) == (1, 1):
            return jnp.mean(x, axis=(1, 2), keepdims=True)
        if height % out_h == 0 and width % out_w == 0:
            kh, kw = height // out_h, width // out_w
            return nn.avg_pool(x, (kh, kw), (kh, kw))
        rows = _adaptive_matrix(height, out_h)  # [out_h, H]
        cols = _adaptive_matrix(width, out_w)  # [out_w, W]
        y = jnp.einsum("ph,nhwc->npwc", rows.astype(x.dtype), x)
        return jnp.einsum("qw,npwc->npqc", cols.astype(x.dtype), y)


def _adaptive_matrix(size: int, out: int) -> np.ndarray:
    matrix = np.zeros((out, size), np.float32)
    for i in range(out):
        start, end = (i * size) // out, -((-(i + 1) * size) // out)
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


def flatten(x: jax.Array) -> jax.Array:
    """Flatten all but the batch axis (NHWC order: converters permute torch's CHW weights)."""
    return x.reshape((x.shape[0], -1))


def check_dense_inputs(module: nn.Module, dense: str, flat: jax.Array, image: tuple) -> None:
    """InputError when the Dense layer `dense` of `module` (one with no adaptive pooling
    before it, e.g. LeNet's fc1) already has weights for another number of inputs: the
    variables were initialized at another image size than `image` (the input's shape)."""
    if module.has_variable("params", dense):
        n_in = module.variables["params"][dense]["kernel"].shape[0]
        if n_in != flat.shape[-1]:
            raise InputError(
                f"{type(module).__name__}'s variables were initialized at another input size: "
                f"its {dense} layer takes {n_in} features but input {tuple(image)} gives "
                f"{flat.shape[-1]}. Resize the images to the size used at init (the model's "
                "canonical size), or initialize the model at this size."
            )


class LocalResponseNorm(nn.Module):
    """`torch.nn.LocalResponseNorm`: x / (k + alpha/size * sum of squares over `size`
    neighbouring channels) ** beta, as in AlexNet (2012), section 3.3."""

    size: int = 5
    alpha: float = 1e-4
    beta: float = 0.75
    k: float = 2.0

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        squared = jnp.square(x.astype(jnp.float32))
        before, after = self.size // 2, (self.size - 1) // 2
        padded = jnp.pad(squared, ((0, 0), (0, 0), (0, 0), (before, after)))
        window_sum = jax.lax.reduce_window(
            padded, 0.0, jax.lax.add, (1, 1, 1, self.size), (1, 1, 1, 1), "VALID"
        )
        denom = (self.k + self.alpha / self.size * window_sum) ** self.beta
        return (x / denom).astype(x.dtype)


@flax.struct.dataclass
class AuxOutputs:
    """Training-time output of networks with auxiliary classifiers (GoogLeNet): the loss is
    `ce(logits) + aux_weight * sum(ce(a) for a in aux_logits)`."""

    logits: jax.Array
    aux_logits: tuple[jax.Array, ...]
    aux_weight: float = flax.struct.field(pytree_node=False, default=0.3)


class Classifier(nn.Module):
    """Base of every classifier: subclasses define a compact `features(x, train)` returning
    named stages, "pre_logits" and "logits"; `__call__` returns the logits (with
    `num_classes=0`, the pooled "pre_logits" embedding, as in timm).

    Each family also declares its parameter groups (timm's `group_matcher`): `head_name` is
    the top-level module that makes the logits, and `group_matcher()` maps group names to
    regular expressions over top-level module names, in network order, the head last.
    Freezing and per-stage learning rates (jaxcnn.train.transfer) read this declaration."""

    head_name: ClassVar[str] = "fc"

    def group_matcher(self) -> dict[str, str]:
        """{group: regex} over top-level module names, in network order; "head" last. A
        "{}" in a group name is filled with the regex's first capture ("layer{}" with
        `layer(\\d+)_\\d+` gives layer1, layer2, ...)."""
        raise NotImplementedError(f"{type(self).__name__} declares no parameter groups")

    def features(self, x: jax.Array, train: bool = False) -> dict[str, jax.Array]:
        raise NotImplementedError

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        return self.features(x, train=train)["logits"]


class ConvBNAct(nn.Module):
    """Conv (no bias) + BatchNorm + activation: torchvision's `BasicConv2d` and
    `Conv2dNormActivation` (`norm=None`: conv + activation only; `dilation` > 1: a dilated,
    "atrous" conv whose same-padding is dilation * (kernel - 1) // 2, as torchvision's).
    `act` is a callable or a name from `jaxcnn.models.activations` (a learned one, PReLU,
    becomes the child "act"); `kernel_init` a callable or a name from
    `jaxcnn.models.initializers` (None: flax's LeCun normal)."""

    features: int
    kernel_size: int = 3
    strides: int = 1
    padding: int | None = None  # None: "same" padding for odd kernels, as torchvision
    groups: int = 1
    dilation: int = 1
    norm: ModuleDef | None = BatchNorm
    act: ActivationSpec | None = nn.relu
    kernel_init: InitializerSpec = None
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def __post_init__(self) -> None:
        if self.act is not None:
            check_activation(self.act)
        check_initializers(self)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        pad = (self.kernel_size - 1) // 2 * self.dilation if self.padding is None else self.padding
        x = nn.Conv(
            self.features,
            (self.kernel_size, self.kernel_size),
            (self.strides, self.strides),
            padding=((pad, pad), (pad, pad)),
            kernel_dilation=(self.dilation, self.dilation),
            feature_group_count=self.groups,
            use_bias=False,
            kernel_init=resolve_initializer(self.kernel_init, nn.linear.default_kernel_init),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="conv",
        )(x)
        if self.norm is not None:
            x = self.norm(name="bn")(x)
        if self.act is None:
            return x
        return get_activation(self.act, name="act", param_dtype=self.param_dtype)(x)


def classifier_head(
    x: jax.Array,
    num_classes: int,
    *,
    dtype: Dtype,
    param_dtype: Dtype,
    name: str = "fc",
    kernel_init: Callable[..., jax.Array] = nn.linear.default_kernel_init,
    bias_init: Callable[..., jax.Array] = nn.initializers.zeros,
) -> jax.Array:
    """Final Dense layer with float32 logits (stable losses under bf16 compute); identity
    when `num_classes == 0`."""
    if num_classes == 0:
        return x
    logits = nn.Dense(
        num_classes, kernel_init=kernel_init, bias_init=bias_init, dtype=dtype,
        param_dtype=param_dtype, name=name,
    )(x)
    return logits.astype(jnp.float32)


def match_groups(matcher: dict[str, str], modules: list[str]) -> list[tuple[str, list[str]]]:
    """[(group, [top-level modules])] in the matcher's (network) order: each module joins
    the first group whose regex matches its whole name; a "{}" group name is filled with
    the first capture, numbered groups in numeric order. Unmatched modules raise KeyError
    (a family's declaration that misses one of its modules is a bug of that family)."""
    found: dict[str, list[str]] = {}
    rank: dict[str, tuple] = {}
    for module in modules:
        for position, (group, pattern) in enumerate(matcher.items()):
            match = re.fullmatch(pattern, module)
            if match is None:
                continue
            name = group.format(match.group(1)) if "{}" in group else group
            found.setdefault(name, []).append(module)
            capture = match.group(1) if "{}" in group else ""
            rank[name] = (position, int(capture) if capture.isdigit() else 0, capture)
            break
        else:
            raise KeyError(f"top-level module {module!r} matches no group of {matcher}")
    return [(g, sorted(found[g], key=_natural)) for g in sorted(found, key=rank.__getitem__)]


def _natural(name: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]
