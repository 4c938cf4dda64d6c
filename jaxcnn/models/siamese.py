"""Siamese network (Bromley et al., 1993; Koch et al., 2015): one backbone with shared weights
applied to both images of a pair, giving one embedding per image; contrastive or triplet
losses, and similarity search, compare the embeddings.

Any registered classifier serves as the backbone: it is built with
`create_model(backbone, num_classes=0)`, so its pooled "pre_logits" features are the
embedding, optionally followed by a linear projection to `embedding_dim`.

With `similarity_head=True` the network also LEARNS the comparison, as Koch, Zemel &
Salakhutdinov (2015), "Siamese Neural Networks for One-shot Image Recognition", eq. (1):
p(same) = sigmoid(sum_j alpha_j |f(x1)_j - f(x2)_j| + b), a dense layer on the componentwise
L1 distance, trained with binary cross-entropy on same/different pairs. `similarity` scores
pairs, `pairwise_similarity` every pair of one batch (one backbone pass).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.core import FrozenDict

from jaxcnn.errors import ConfigError, InputError
from jaxcnn.models.layers import Dtype
from jaxcnn.models.registry import create_model, get_model_spec, register_model


class Siamese(nn.Module):
    """Shared-weight embedding network around the registered classifier `backbone`.

    `num_classes` exists only so that `create_model(name, num_classes=...)` has one signature
    for every model: the output is an embedding, so it must stay 0 (set `embedding_dim`).
    """

    backbone: str = "resnet18"
    backbone_kwargs: Mapping[str, Any] = FrozenDict()
    embedding_dim: int | None = None  # None: the backbone's pooled features, unprojected
    similarity_head: bool = False  # True: learned |f1 - f2| -> dense -> sigmoid (Koch 2015)
    num_classes: int = 0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def __post_init__(self) -> None:
        if self.num_classes != 0:
            raise ConfigError(
                f"siamese returns embeddings, not class scores, so num_classes must be 0; got "
                f"{self.num_classes}. Use embedding_dim={self.num_classes} for a projection."
            )
        spec = get_model_spec(self.backbone)  # an unknown name lists close matches
        if spec.task != "classification":
            raise ConfigError(
                f"siamese needs a classification backbone (its pooled features are the "
                f"embedding); {self.backbone!r} is a {spec.task} model."
            )
        super().__post_init__()

    def setup(self) -> None:
        kwargs = {"dtype": self.dtype, "param_dtype": self.param_dtype, **self.backbone_kwargs}
        self.encoder = create_model(self.backbone, num_classes=0, **kwargs)
        if self.embedding_dim is not None:
            self.projection = nn.Dense(
                self.embedding_dim, dtype=self.dtype, param_dtype=self.param_dtype
            )
        if self.similarity_head:
            self.similarity_fc = nn.Dense(1, param_dtype=self.param_dtype)

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Embeddings [B, D] (float32) of one batch of images."""
        z = self.encoder(x, train=train)
        if self.embedding_dim is not None:
            z = self.projection(z)
        z = z.astype(jnp.float32)
        if self.similarity_head and self.is_initializing():
            self.compare(z, z)  # create the head's parameters with the rest
        return z

    def compare(self, z1: jax.Array, z2: jax.Array) -> jax.Array:
        """Same-pair logits [...] of embeddings z1, z2 [..., D] (broadcast): the learned head
        on |z1 - z2|; sigmoid of it is the probability that both show the same class."""
        if not self.similarity_head:
            raise ConfigError(
                "this siamese model has no learned similarity head; create it with "
                "similarity_head=True (or compare embeddings with a distance)."
            )
        return self.similarity_fc(jnp.abs(z1 - z2))[..., 0].astype(jnp.float32)

    def similarity(self, x1: jax.Array, x2: jax.Array, train: bool = False) -> jax.Array:
        """Same-pair logits [B] of the pairs (x1[i], x2[i])."""
        z1, z2 = self.pair(x1, x2, train=train)
        return self.compare(z1, z2)

    def pairwise_similarity(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Same-pair logits [B, B] of every pair of images in the batch `x`."""
        z = self(x, train=train)
        return self.compare(z[:, None, :], z[None, :, :])

    def pair(
        self, x1: jax.Array, x2: jax.Array, train: bool = False
    ) -> tuple[jax.Array, jax.Array]:
        """Embeddings of both sides of a batch of pairs, with the same parameters. Same-shape
        sides go through the backbone as one batch (one pass; in training, BN statistics are
        those of both sides together)."""
        if x1.shape[0] != x2.shape[0]:
            raise InputError(
                f"siamese.pair expects the same number of images on both sides; got batches "
                f"of shape {tuple(x1.shape)} and {tuple(x2.shape)}."
            )
        if x1.shape != x2.shape:
            return self(x1, train=train), self(x2, train=train)
        z = self(jnp.concatenate([x1, x2], axis=0), train=train)
        return z[: x1.shape[0]], z[x1.shape[0] :]


@register_model(
    family="siamese", task="embedding", input_shape=(64, 64, 3), min_input_size=32, num_classes=0
)
def siamese(**kwargs) -> Siamese:
    """Siamese embedding network; by default ResNet-18 features (512-d) at 64x64."""
    return Siamese(**kwargs)
