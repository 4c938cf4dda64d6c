"""Convolutional autoencoder for 28x28 grayscale images (MNIST), as in the Keras listing:

    28x28x1 -> conv32 3x3 VALID relu -> max-pool 2 -> conv64 3x3 VALID relu -> max-pool 2
    -> conv64 3x3 VALID relu -> flatten (3x3x64) -> dense 49 relu (the code)
    -> reshape 7x7x1 -> convT64 3x3/2 'same' relu + BN -> convT64 3x3/2 'same' relu + BN
    -> convT32 3x3 'same' relu -> conv1 3x3 'same' sigmoid -> 28x28x1

Keras reports 140,850 parameters of which 256 are BN running statistics: here `params` holds
140,594 values and `batch_stats` 256. Keras defaults are kept (Glorot-uniform kernels, BN eps
1e-3; BN momentum is PyTorch's 0.1 and running variances are updated with the unbiased batch
variance, as everywhere in jaxcnn: `layers.BatchNorm`). `__call__` returns the sigmoid
reconstruction in [0, 1]; `features(...)["logits"]` holds the pre-sigmoid values for a
numerically stable binary cross-entropy.
"""

from __future__ import annotations

from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcnn.errors import ConfigError, InputError
from jaxcnn.models.layers import BN_MOMENTUM, BatchNorm, Dtype, check_input, flatten
from jaxcnn.models.registry import register_model

IMAGE_SIZE = 28
CODE_SHAPE = (7, 7, 1)  # the 49-d code is reshaped to this and upsampled x4 back to 28x28


class ConvAutoencoder(nn.Module):
    """The Keras listing's convolutional autoencoder; `encode` gives the 49-d code,
    `decode` maps a code back to an image.

    `num_classes` exists only so that `create_model(name, num_classes=...)` has one signature
    for every model: there is no classifier, so it must stay 0.
    """

    num_classes: int = 0
    in_channels: int = 1
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def __post_init__(self) -> None:
        if self.num_classes != 0:
            raise ConfigError(
                f"conv_autoencoder has no classifier head, so num_classes must be 0; got "
                f"{self.num_classes}. Train a classifier on its codes (model.encode) instead."
            )
        super().__post_init__()

    def setup(self) -> None:
        init = nn.initializers.glorot_uniform()  # Keras' default for Conv2D/Dense/Transpose
        conv = partial(
            nn.Conv, kernel_size=(3, 3), kernel_init=init, dtype=self.dtype,
            param_dtype=self.param_dtype,
        )  # fmt: skip
        deconv = partial(
            nn.ConvTranspose, kernel_size=(3, 3), padding="SAME", kernel_init=init,
            dtype=self.dtype, param_dtype=self.param_dtype,
        )  # fmt: skip
        bn = partial(
            BatchNorm, momentum=BN_MOMENTUM, epsilon=1e-3, dtype=self.dtype,
            param_dtype=self.param_dtype,
        )  # fmt: skip
        self.conv1 = conv(32, padding="VALID")
        self.conv2 = conv(64, padding="VALID")
        self.conv3 = conv(64, padding="VALID")
        self.code = nn.Dense(
            IMAGE_SIZE * IMAGE_SIZE // 16,
            kernel_init=init,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )
        self.deconv1 = deconv(64, strides=(2, 2))
        self.bn1 = bn()
        self.deconv2 = deconv(64, strides=(2, 2))
        self.bn2 = bn()
        self.deconv3 = deconv(32)
        self.output_conv = conv(self.in_channels, padding="SAME")

    def _encoder(self, x: jax.Array) -> dict[str, jax.Array]:
        check_input(x, model="conv_autoencoder", channels=self.in_channels, min_size=IMAGE_SIZE)
        if x.shape[1:3] != (IMAGE_SIZE, IMAGE_SIZE):
            raise InputError(
                f"conv_autoencoder needs exactly {IMAGE_SIZE}x{IMAGE_SIZE} inputs [batch, "
                f"{IMAGE_SIZE}, {IMAGE_SIZE}, {self.in_channels}] (its dense code is reshaped "
                f"to 7x7 and upsampled x4); got shape {tuple(x.shape)}. Resize the images."
            )
        out = {}
        x = out["stage1"] = nn.max_pool(nn.relu(self.conv1(x)), (2, 2), (2, 2))  # 13x13
        x = out["stage2"] = nn.max_pool(nn.relu(self.conv2(x)), (2, 2), (2, 2))  # 5x5
        x = out["stage3"] = nn.relu(self.conv3(x))  # 3x3
        out["code"] = nn.relu(self.code(flatten(x)))
        return out

    def _decoder(self, code: jax.Array, train: bool) -> dict[str, jax.Array]:
        x = code.reshape((code.shape[0], *CODE_SHAPE))
        # Keras order: the activation is inside Conv2DTranspose, BN comes after it.
        x = self.bn1(nn.relu(self.deconv1(x)), use_running_average=not train)  # 14x14
        x = self.bn2(nn.relu(self.deconv2(x)), use_running_average=not train)  # 28x28
        x = nn.relu(self.deconv3(x))
        logits = self.output_conv(x).astype(jnp.float32)
        return {"logits": logits, "reconstruction": jax.nn.sigmoid(logits)}

    def encode(self, x: jax.Array, train: bool = False) -> jax.Array:
        """The 49-d code [B, 49] of images [B, 28, 28, in_channels]."""
        return self._encoder(x)["code"]

    def decode(self, code: jax.Array, train: bool = False) -> jax.Array:
        """Images [B, 28, 28, in_channels] in [0, 1] from codes [B, 49]."""
        expected = CODE_SHAPE[0] * CODE_SHAPE[1] * CODE_SHAPE[2]
        if code.ndim != 2 or code.shape[1] != expected:
            raise InputError(
                f"conv_autoencoder.decode expects codes of shape [batch, {expected}]; got "
                f"{tuple(code.shape)}."
            )
        return self._decoder(code, train)["reconstruction"]

    def features(self, x: jax.Array, train: bool = False) -> dict[str, jax.Array]:
        """Encoder stages "stage1".."stage3", the "code", the pre-sigmoid "logits" and the
        "reconstruction"."""
        out = self._encoder(x)
        return {**out, **self._decoder(out["code"], train)}

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """The reconstruction [B, 28, 28, in_channels] in [0, 1] (float32)."""
        return self.features(x, train=train)["reconstruction"]


@register_model(
    family="autoencoder",
    task="reconstruction",
    input_shape=(IMAGE_SIZE, IMAGE_SIZE, 1),
    min_input_size=IMAGE_SIZE,
    num_classes=0,
)
def conv_autoencoder(**kwargs) -> ConvAutoencoder:
    """The Keras listing's MNIST autoencoder: 140,594 parameters + 256 BN statistics."""
    return ConvAutoencoder(**kwargs)
