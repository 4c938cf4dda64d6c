"""Training-time assignment of anchors / proposals to ground truth, with torchvision's semantics
(`Matcher` and `BalancedPositiveNegativeSampler` in torchvision/models/detection/_utils.py),
jittable with static shapes: padded ground-truth rows and padded predictions are masked, never
sliced away.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn.detection.boxes import is_concrete
from jaxcnn.errors import InputError

BELOW_LOW_THRESHOLD = -1
"""Matcher output for a prediction whose best quality is < low_threshold (a negative)."""
BETWEEN_THRESHOLDS = -2
"""Matcher output for a prediction in [low_threshold, high_threshold), and for padding
(ignored by the sampler)."""


@dataclasses.dataclass(frozen=True)
class Matcher:
    """Assign each prediction (column of an [M, N] quality matrix, e.g. `box_iou(gt, anchors)`)
    the index of its best ground truth if that quality >= `high_threshold`, else
    `BELOW_LOW_THRESHOLD` (< `low_threshold`) or `BETWEEN_THRESHOLDS`.

    With `allow_low_quality_matches`, every prediction that ties for the best quality of some
    ground truth keeps its best match even below the thresholds (torchvision's
    `set_low_quality_matches_`, ties and all; as there, a ground truth that overlaps nothing
    makes every zero-overlap prediction match its arg-max ground truth).

    Ties between ground truths go to the lowest index (torch's `max(dim=0)` on CPU). With no
    valid ground truth every prediction is `BELOW_LOW_THRESHOLD`: background, as torchvision's
    RPN and RoI heads label an image without boxes (its bare Matcher raises instead).
    """

    high_threshold: float
    low_threshold: float
    allow_low_quality_matches: bool = False

    def __post_init__(self):
        if self.low_threshold > self.high_threshold:
            raise InputError(
                f"Matcher needs low_threshold <= high_threshold; got {self.low_threshold} > "
                f"{self.high_threshold}."
            )

    def __call__(self, quality, gt_valid=None, pred_valid=None) -> jax.Array:
        """Matches [N] int32 for quality [M, N]; `gt_valid` [M] / `pred_valid` [N] mark real rows
        and columns of padded inputs (padded predictions come out `BETWEEN_THRESHOLDS`)."""
        quality = jnp.asarray(quality)
        if quality.ndim != 2:
            raise InputError(
                f"Matcher expects an [M ground truths, N predictions] matrix; got shape "
                f"{quality.shape} (vmap over images for a batch)."
            )
        if is_concrete(quality) and not np.isfinite(np.asarray(quality)).all():
            raise InputError("Matcher: the quality matrix contains NaN or infinite values.")
        m, n = quality.shape
        if m == 0:
            return jnp.full((n,), BELOW_LOW_THRESHOLD, jnp.int32)
        gt_ok = jnp.ones((m,), bool) if gt_valid is None else jnp.asarray(gt_valid, bool)
        pred_ok = jnp.ones((n,), bool) if pred_valid is None else jnp.asarray(pred_valid, bool)
        return _match(quality, gt_ok, pred_ok, self)


@functools.partial(jax.jit, static_argnums=(3,))
def _match(quality, gt_ok, pred_ok, matcher: Matcher) -> jax.Array:
    q = jnp.where(gt_ok[:, None] & pred_ok[None, :], quality, -jnp.inf)
    vals = jnp.max(q, axis=0)
    best = jnp.argmax(q, axis=0).astype(jnp.int32)
    matches = jnp.where(
        vals < matcher.low_threshold,
        BELOW_LOW_THRESHOLD,
        jnp.where(vals < matcher.high_threshold, BETWEEN_THRESHOLDS, best),
    )
    if matcher.allow_low_quality_matches:
        highest = jnp.max(q, axis=1, keepdims=True)
        ties = (q == highest) & gt_ok[:, None] & pred_ok[None, :]
        matches = jnp.where(jnp.any(ties, axis=0), best, matches)
    return jnp.where(pred_ok, matches, BETWEEN_THRESHOLDS).astype(jnp.int32)


@dataclasses.dataclass(frozen=True)
class BalancedSampler:
    """Sample at most `batch_size_per_image` elements with at most a `positive_fraction` of
    positives, uniformly at random within each group, filling up with negatives
    (torchvision's `BalancedPositiveNegativeSampler`).

    Input: labels [N] with >= 1 positive, 0 negative, -1 (or < 0) ignored. The choice is a
    uniform random subset drawn from `key` (torchvision uses `torch.randperm`; the same counts
    and distribution, not the same draw).
    """

    batch_size_per_image: int
    positive_fraction: float

    def __post_init__(self):
        if self.batch_size_per_image < 1 or not 0.0 <= self.positive_fraction <= 1.0:
            raise InputError(
                "BalancedSampler needs batch_size_per_image >= 1 and 0 <= positive_fraction "
                f"<= 1; got {self.batch_size_per_image} and {self.positive_fraction}."
            )

    def __call__(self, labels, key: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(positive mask [N], negative mask [N]) of the sampled elements."""
        labels = jnp.asarray(labels)
        if labels.ndim != 1:
            raise InputError(f"BalancedSampler expects labels [N]; got shape {labels.shape}.")
        return _sample(labels, key, self)

    def indices(self, pos_mask, neg_mask) -> tuple[jax.Array, jax.Array]:
        """The sampled elements' indices in increasing order (as torchvision's
        `torch.where(pos | neg)`), padded to `batch_size_per_image` with -1, and their mask."""
        chosen = jnp.asarray(pos_mask) | jnp.asarray(neg_mask)
        (idx,) = jnp.nonzero(chosen, size=self.batch_size_per_image, fill_value=-1)
        return idx.astype(jnp.int32), idx >= 0


@functools.partial(jax.jit, static_argnums=(2,))
def _sample(labels, key, sampler: BalancedSampler) -> tuple[jax.Array, jax.Array]:
    positive, negative = labels >= 1, labels == 0
    num_pos = jnp.minimum(
        jnp.sum(positive), int(sampler.batch_size_per_image * sampler.positive_fraction)
    )
    num_neg = jnp.minimum(jnp.sum(negative), sampler.batch_size_per_image - num_pos)
    key_pos, key_neg = jax.random.split(key)
    return _random_subset(positive, num_pos, key_pos), _random_subset(negative, num_neg, key_neg)


def _random_subset(mask: jax.Array, count: jax.Array, key: jax.Array) -> jax.Array:
    """A uniformly random subset of `count` of the True elements of `mask`."""
    u = jax.random.uniform(key, mask.shape)
    order = jnp.argsort(jnp.where(mask, u, 2.0))
    rank = (
        jnp.zeros(mask.shape, jnp.int32).at[order].set(jnp.arange(mask.shape[0], dtype=jnp.int32))
    )
    return mask & (rank < count)
