"""The "siamese" task: metric learning on labelled batches for one-shot learning.

The model maps an image to an embedding (any registered network: with `num_classes=E` its
"logits" are an E-dimensional embedding; or the `siamese` wrapper). The loss is computed over
the pairs or triplets formed inside each (global, cross-device) batch, from
`jaxcnn.similarity.siamese`. task_kwargs:

- loss: "contrastive" (every pair, positives and negatives balanced) or "triplet";
- margin: the contrastive / triplet margin (default 1.0);
- mining: "hard" (batch-hard triplets, default) or "all";
- normalize: L2-normalize embeddings before the loss (default True);
- train_classes: labels used for training (default: all). Examples of other classes get no
  gradient, so those classes stay unseen for one-shot evaluation; they are still scored in
  evaluation as `heldout_recall_at_1`.

Metrics: loss, recall_at_1 (is an example's nearest neighbour in the batch of its class;
over training classes, which pick the best checkpoint) and heldout_recall_at_1.

The "siamese_pairs" task learns the comparison itself instead (Koch et al., 2015): the
model's similarity head scores each pair, trained with binary cross-entropy on same /
different.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxcnn.errors import ConfigError
from jaxcnn.losses import binary_cross_entropy_with_logits
from jaxcnn.similarity.siamese import (
    batch_contrastive_loss,
    batch_recall_at_1,
    batch_triplet_loss,
)
from jaxcnn.train.tasks import Metrics, Task, register_task


@register_task("siamese")
class Siamese(Task):
    """Contrastive or triplet metric learning over in-batch pairs (see the module doc)."""

    best_metric = "recall_at_1"
    best_mode = "max"
    batch_keys = ("label",)

    def __init__(self, config: Any):
        super().__init__(config)
        kw = self.kwargs
        unknown = set(kw) - {"loss", "margin", "mining", "normalize", "train_classes"}
        if unknown:
            raise ConfigError(f"unknown siamese task_kwargs {sorted(unknown)}; valid: loss, "
                              "margin, mining, normalize, train_classes.")
        self.loss_name = kw.get("loss", "contrastive")
        if self.loss_name not in ("contrastive", "triplet"):
            raise ConfigError(f"siamese loss must be contrastive or triplet; got "
                              f"{self.loss_name!r}.")
        self.margin = float(kw.get("margin", 1.0))
        self.mining = kw.get("mining", "hard")
        if self.mining not in ("hard", "all"):
            raise ConfigError(f"siamese mining must be hard or all; got {self.mining!r}.")
        self.normalize = bool(kw.get("normalize", True))
        self.train_classes = tuple(int(c) for c in kw.get("train_classes", ()) or ())

    def _embed(self, outputs: Any) -> jax.Array:
        if not isinstance(outputs, jax.Array) or outputs.ndim != 2:
            raise ConfigError(
                "the siamese task needs a model returning embeddings [batch, dim] (e.g. a "
                "classifier with model.kwargs.num_classes=dim, or the siamese model); got "
                f"{type(outputs).__name__} {getattr(outputs, 'shape', '')}."
            )
        emb = outputs.astype(jnp.float32)
        if self.normalize:
            emb = emb / jnp.sqrt(jnp.maximum(jnp.sum(jnp.square(emb), -1, keepdims=True), 1e-12))
        return emb

    def _seen(self, labels: jax.Array) -> jax.Array:
        if not self.train_classes:
            return jnp.ones(labels.shape, bool)
        return jnp.isin(labels, jnp.asarray(self.train_classes, labels.dtype))

    def _loss(self, emb: jax.Array, labels: jax.Array, valid: jax.Array
              ) -> tuple[jax.Array, jax.Array]:
        if self.loss_name == "contrastive":
            return batch_contrastive_loss(emb, labels, valid, self.margin)
        return batch_triplet_loss(emb, labels, valid, self.margin, self.mining)

    def _sums(self, outputs: Any, batch: dict[str, jax.Array], weight: jax.Array | None
              ) -> tuple[jax.Array, Metrics]:
        emb, labels = self._embed(outputs), batch["label"]
        real = jnp.ones(labels.shape, bool) if weight is None else weight > 0
        seen = self._seen(labels) & real
        loss, per_anchor = self._loss(emb, labels, seen)
        hit, has_pos = batch_recall_at_1(emb, labels, real)
        counted = (seen & has_pos).astype(jnp.float32)
        heldout = (real & ~self._seen(labels) & has_pos).astype(jnp.float32)
        return loss, {
            "loss": jnp.sum(per_anchor * counted),
            "recall_at_1": jnp.sum(hit * counted),
            "count": jnp.sum(counted),
            "heldout_recall_at_1": jnp.sum(hit * heldout),
            "heldout_count": jnp.sum(heldout),
        }

    def loss(self, outputs: Any, batch: dict[str, jax.Array]) -> tuple[jax.Array, Metrics]:
        return self._sums(outputs, batch, None)

    def eval_metrics(self, outputs: Any, batch: dict[str, jax.Array]) -> Metrics:
        return self._sums(outputs, batch, batch.get("weight"))[1]

    def summarize(self, sums: dict[str, float]) -> dict[str, float]:
        """Means: held-out recall over held-out anchors, the rest over training anchors."""
        count = max(float(sums.get("count", 0.0)), 1e-12)
        held = max(float(sums.get("heldout_count", 0.0)), 1e-12)
        out = {k: float(v) / count for k, v in sums.items()
               if k not in ("count", "heldout_count", "heldout_recall_at_1")}
        if float(sums.get("heldout_count", 0.0)) > 0:
            out["heldout_recall_at_1"] = float(sums["heldout_recall_at_1"]) / held
        return out


@register_task("siamese_pairs")
class SiamesePairs(Task):
    """Same/different verification with a LEARNED similarity (Koch, Zemel & Salakhutdinov,
    2015): the siamese model's head scores every pair of a batch (`pairwise_similarity`:
    |f1 - f2| -> dense -> logit), trained with binary cross-entropy against "same class",
    the positive and the negative pairs weighted equally (a batch of 10 classes holds ~10%
    positives; the paper sampled balanced pairs). Build the model with
    `siamese(..., similarity_head=True)`.

    Metrics over the pairs of each batch: loss (the balanced BCE), pair_accuracy (balanced:
    the mean of the accuracies on same and on different pairs at p = 0.5, picks the best
    checkpoint) and recall_at_1 (is the pair an example scores highest of its class)."""

    best_metric = "pair_accuracy"
    best_mode = "max"
    batch_keys = ("label",)
    model_method = "pairwise_similarity"

    def _sums(self, outputs: Any, batch: dict[str, jax.Array], weight: jax.Array | None
              ) -> tuple[jax.Array, Metrics]:
        labels = batch["label"]
        n = labels.shape[0]
        if getattr(outputs, "shape", None) != (n, n):
            raise ConfigError(
                "the siamese_pairs task needs a model scoring every pair of the batch [batch, "
                "batch] (create_model('siamese', similarity_head=True)); got "
                f"{type(outputs).__name__} {getattr(outputs, 'shape', '')}."
            )
        logits = jnp.asarray(outputs, jnp.float32)
        real = jnp.ones((n,), bool) if weight is None else weight > 0
        valid = real[:, None] & real[None, :] & ~jnp.eye(n, dtype=bool)
        same = labels[:, None] == labels[None, :]
        pos, neg = (same & valid).astype(jnp.float32), (~same & valid).astype(jnp.float32)
        bce = binary_cross_entropy_with_logits(logits, same.astype(jnp.float32),
                                               reduction="none")
        n_pos, n_neg = jnp.sum(pos), jnp.sum(neg)
        loss = 0.5 * (jnp.sum(bce * pos) / jnp.maximum(n_pos, 1.0)
                      + jnp.sum(bce * neg) / jnp.maximum(n_neg, 1.0))
        said_same = logits > 0
        best = jnp.argmax(jnp.where(valid, logits, -jnp.inf), axis=1)
        has_pos = jnp.any(same & valid, axis=1)
        hit = (labels[best] == labels) & has_pos & real
        return loss, {
            "pos_loss": jnp.sum(bce * pos), "neg_loss": jnp.sum(bce * neg),
            "pos_count": n_pos, "neg_count": n_neg,
            "pos_correct": jnp.sum(said_same * pos), "neg_correct": jnp.sum(~said_same * neg),
            "hits": jnp.sum(hit.astype(jnp.float32)),
            "anchors": jnp.sum((has_pos & real).astype(jnp.float32)),
        }

    def loss(self, outputs: Any, batch: dict[str, jax.Array]) -> tuple[jax.Array, Metrics]:
        return self._sums(outputs, batch, None)

    def eval_metrics(self, outputs: Any, batch: dict[str, jax.Array]) -> Metrics:
        return self._sums(outputs, batch, batch.get("weight"))[1]

    def summarize(self, sums: dict[str, float]) -> dict[str, float]:
        """Balanced loss and pair accuracy over the summed pairs; recall_at_1 over anchors."""
        ratio = lambda a, b: float(sums[a]) / max(float(sums[b]), 1e-12)
        return {
            "loss": 0.5 * (ratio("pos_loss", "pos_count") + ratio("neg_loss", "neg_count")),
            "pair_accuracy": 0.5 * (ratio("pos_correct", "pos_count")
                                    + ratio("neg_correct", "neg_count")),
            "recall_at_1": ratio("hits", "anchors"),
        }
