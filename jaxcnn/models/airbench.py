"""The airbench94 network (Jordan, "94% on CIFAR-10 in 3.29 seconds on a single GPU", 2024,
arXiv:2404.00498; the `airbench` package 0.1.8, `lib_airbench94.py` `make_net94` and
`utils.py`), layer for layer:

    whiten: 2x2 conv, 3 -> 24 channels, no padding, bias; kernel set from the data by
            `whitening_kernel` (the eigenvectors of the 2x2 patch covariance, +/-) and never
            trained; GELU
    block1..3: conv3x3 -> maxpool2 -> BN -> GELU -> conv3x3 -> BN -> GELU (64, 256, 256)
    maxpool3 -> flatten -> fc (no bias) -> x 1/9

Conventions matched: 'same' 3x3 convolutions without bias, initialised as PyTorch's
default with the first `in_channels` filters set to the identity (`torch.nn.init.dirac_`,
airbench's `Conv.reset_parameters`); BatchNorm without a learned scale, eps 1e-12 and
PyTorch momentum 0.4 (flax momentum 0.6) and PyTorch's unbiased running variance
(`jaxcnn.models.layers.batch_norm`); exact (erf) GELU, PyTorch's `nn.GELU()` default."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn.errors import InputError
from jaxcnn.models.initializers import torch_default as torch_default_kernel_init
from jaxcnn.models.layers import (
    Classifier,
    Dtype,
    batch_norm,
    check_input,
    max_pool,
)
from jaxcnn.models.registry import register_model

# airbench's hyp['net'] (lib_airbench94.py lines 42-51).
WIDTHS = (64, 256, 256)
BN_MOMENTUM = 0.6  # flax convention: running = 0.6 running + 0.4 batch (torch momentum 0.4)
BN_EPSILON = 1e-12
SCALING_FACTOR = 1 / 9
WHITEN_KERNEL = 2
WHITEN_EPS = 5e-4  # utils.py init_whitening_conv


def dirac_kernel_init(base: Callable[..., jax.Array] = torch_default_kernel_init
                      ) -> Callable[..., jax.Array]:
    """`base` init with the first min(in, out) filters replaced by the identity, i.e.
    `torch.nn.init.dirac_(w[:w.size(1)])` after PyTorch's default init (airbench `Conv`)."""

    def init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
        kernel = base(key, shape, dtype)
        kh, kw, cin, cout = shape
        n = min(cin, cout)
        kernel = kernel.at[..., :n].set(0)
        return kernel.at[kh // 2, kw // 2, jnp.arange(n), jnp.arange(n)].set(1)

    return init


def whitening_kernel(images: jax.Array | np.ndarray, kernel_size: int = WHITEN_KERNEL,
                     eps: float = WHITEN_EPS) -> jax.Array:
    """The patch-whitening convolution kernel [k, k, C, 2 k k C] of airbench's
    `init_whitening_conv` (utils.py lines 172-187): with `P` the [n, k*k*C] matrix of all
    k x k patches (stride 1, no padding) of the normalized `images` [N, H, W, C], the
    second-moment matrix `P^T P / n = V diag(l) V^T` (eigenvalues descending) gives the
    filters `V / sqrt(l + eps)` followed by their negatives, so the (pre-GELU) outputs are
    decorrelated with variance l / (l + eps). Computed in float32."""
    x = jnp.asarray(images, jnp.float32)
    if x.ndim != 4:
        raise InputError(f"whitening_kernel expects [N, H, W, C] images; got shape {x.shape}.")
    n, h, w, c = x.shape
    if h < kernel_size or w < kernel_size or n == 0:
        raise InputError(
            f"whitening_kernel needs at least one image of at least {kernel_size}x{kernel_size} "
            f"pixels; got shape {x.shape}."
        )
    # Patches flattened in (kh, kw, C) order, which is the HWIO kernel's (H, W, I) order.
    patches = jnp.concatenate(
        [x[:, i:h - kernel_size + 1 + i, j:w - kernel_size + 1 + j, :]
         for i in range(kernel_size) for j in range(kernel_size)], axis=-1,
    ).reshape(-1, kernel_size * kernel_size * c)
    cov = patches.T @ patches / patches.shape[0]
    eigenvalues, eigenvectors = jnp.linalg.eigh(cov)  # ascending, like torch.linalg.eigh
    eigenvalues, eigenvectors = eigenvalues[::-1], eigenvectors[:, ::-1]
    scaled = eigenvectors / jnp.sqrt(eigenvalues + eps)[None, :]  # columns: filters
    filters = jnp.concatenate([scaled, -scaled], axis=1)
    return filters.reshape(kernel_size, kernel_size, c, 2 * kernel_size * kernel_size * c)


def init_whitening(variables: dict, images: jax.Array | np.ndarray,
                   eps: float = WHITEN_EPS) -> dict:
    """`variables` with `params/whiten/kernel` set by `whitening_kernel` from `images`
    (airbench uses the first 5,000 normalized training images, before any training)."""
    params = dict(variables["params"])
    whiten = dict(params["whiten"])
    kernel = whitening_kernel(images, whiten["kernel"].shape[0], eps)
    if kernel.shape != whiten["kernel"].shape:
        raise InputError(
            f"images with {kernel.shape[2]} channel(s) give a whitening kernel of shape "
            f"{kernel.shape}; the model's is {whiten['kernel'].shape}."
        )
    whiten["kernel"] = kernel.astype(whiten["kernel"].dtype)
    params["whiten"] = whiten
    return {**variables, "params": params}


class ConvGroup(nn.Module):
    """airbench's `ConvGroup`: conv -> maxpool 2 -> BN -> GELU -> conv -> BN -> GELU."""

    filters: int
    conv: Any
    norm: Any

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.conv(self.filters, name="conv1")(x)
        x = max_pool(x, 2, 2)
        x = nn.gelu(self.norm(name="norm1")(x), approximate=False)
        x = self.conv(self.filters, name="conv2")(x)
        return nn.gelu(self.norm(name="norm2")(x), approximate=False)


class AirbenchNet(Classifier):
    """airbench94's network (~1.97 M parameters at the default widths); `features` gives the
    three block outputs, the pooled "pre_logits" and the scaled "logits"."""

    num_classes: int = 10
    widths: tuple[int, ...] = WIDTHS
    whiten_kernel: int = WHITEN_KERNEL
    scaling_factor: float = SCALING_FACTOR
    bn_momentum: float = BN_MOMENTUM
    bn_epsilon: float = BN_EPSILON
    in_channels: int = 3
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def group_matcher(self) -> dict[str, str]:
        """The whitening layer, the three blocks and the fc head (freezing, per-stage rates)."""
        return {"whiten": r"whiten", "block{}": r"block(\d+)", "head": r"fc"}

    def init_from_data(self, variables: dict, images: jax.Array) -> dict:
        """Data-dependent initialisation (the trainer calls it with `config.init.data_examples`
        normalized training images): the whitening kernel, `init_whitening`."""
        return init_whitening(variables, images)

    @nn.compact
    def features(self, x: jax.Array, train: bool = False) -> dict[str, jax.Array]:
        min_size = 8 * 3 + self.whiten_kernel - 1  # three 2x poolings, then a 3x3 max pool
        check_input(x, model="airbench", channels=self.in_channels, min_size=min_size)
        in_shape = x.shape
        whiten_width = 2 * self.in_channels * self.whiten_kernel**2
        x = nn.Conv(whiten_width, (self.whiten_kernel,) * 2, padding="VALID", use_bias=True,
                    kernel_init=torch_default_kernel_init, dtype=self.dtype,
                    param_dtype=self.param_dtype, name="whiten")(x)
        x = nn.gelu(x, approximate=False)
        conv = functools.partial(nn.Conv, kernel_size=(3, 3), padding=1, use_bias=False,
                                 kernel_init=dirac_kernel_init(), dtype=self.dtype,
                                 param_dtype=self.param_dtype)
        norm = functools.partial(batch_norm(train, dtype=self.dtype, param_dtype=self.param_dtype,
                                            epsilon=self.bn_epsilon),
                                 momentum=self.bn_momentum, use_scale=False)
        out = {}
        for i, width in enumerate(self.widths):
            x = out[f"block{i + 1}"] = ConvGroup(width, conv, norm, name=f"block{i + 1}")(x)
        x = max_pool(x, 3, 3)
        x = out["pre_logits"] = x.reshape(x.shape[0], -1)
        if x.shape[-1] != self.widths[-1]:  # the 3x3 pool must leave a 1x1 map
            raise InputError(
                f"airbench expects inputs of {min_size} to {min_size + 23} pixels (CIFAR's "
                f"32), so that its final 3x3 max pool leaves 1x1; got shape {in_shape}."
            )
        if not self.num_classes:
            out["logits"] = x
            return out
        logits = nn.Dense(self.num_classes, use_bias=False, kernel_init=torch_default_kernel_init,
                          dtype=self.dtype, param_dtype=self.param_dtype, name="fc")(x)
        out["logits"] = logits.astype(jnp.float32) * self.scaling_factor
        return out


@register_model(family="airbench", input_shape=(32, 32, 3), min_input_size=25, num_classes=10)
def airbench94(**kwargs) -> AirbenchNet:
    """airbench94's network (94.0% on CIFAR-10 with its recipe, configs/cifar10_speedrun.py)."""
    return AirbenchNet(**kwargs)


def _tiny_airbench(**kwargs) -> AirbenchNet:
    """A narrow airbench for tests (same layers, widths 8/16/16)."""
    return AirbenchNet(widths=(8, 16, 16), **kwargs)
