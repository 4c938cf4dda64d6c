"""The region proposal network's box logic (Ren et al., Faster R-CNN, 2015, section 3.1), as
torchvision's `RegionProposalNetwork` (torchvision/models/detection/rpn.py), jittable with
static shapes: proposals come out padded to `post_nms_top_n` with a validity mask.

- `flatten_head_outputs`: per-level NHWC head outputs -> [N, sum_l H_l W_l A] objectness and
  [N, ..., 4] deltas in torchvision's (level, row, column, anchor) order
  (`concat_box_prediction_layers`);
- `filter_proposals`: per level the `pre_nms_top_n` best anchors, sigmoid, clip to the image,
  drop boxes with a side < 1e-3 and scores < `score_thresh`, NMS per level at `nms_thresh`
  (dense Cluster-NMS, `nms_keep_dense`: a few [k, k] rounds, not one step per kept box), the
  best `post_nms_top_n` (`filter_proposals`);
- `anchor_targets` + `rpn_loss`: anchors matched to ground truth (IoU >= 0.7 positive, < 0.3
  negative, plus each box's best anchors), a balanced sample of 256 per image (half positive at
  most), binary cross-entropy on the sampled objectness and smooth-L1 (beta 1/9) on the positive
  deltas, both divided by the number sampled over the batch (`compute_loss`).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import optax

from jaxcnn.detection.boxes import _iou, clip_boxes_to_image, min_size_mask
from jaxcnn.detection.coder import encode_boxes
from jaxcnn.detection.matching import BELOW_LOW_THRESHOLD, BalancedSampler, Matcher
from jaxcnn.detection.nms import _f32_threshold, _nms_core, nms_keep_dense

RPN_MIN_SIZE = 1e-3  # torchvision's RegionProposalNetwork.min_size


def flatten_head_outputs(
    objectness: Sequence[jax.Array], deltas: Sequence[jax.Array]
) -> tuple[jax.Array, jax.Array]:
    """[N, H, W, A] logits and [N, H, W, 4A] deltas per level -> ([N, T], [N, T, 4])."""
    n = objectness[0].shape[0]
    logits = jnp.concatenate([o.reshape(n, -1) for o in objectness], axis=1)
    boxes = jnp.concatenate([d.reshape(n, -1, 4) for d in deltas], axis=1)
    return logits, boxes


def smooth_l1(x: jax.Array, beta: float) -> jax.Array:
    """`F.smooth_l1_loss(..., reduction="none")` of a difference x: 0.5 x^2 / beta below beta,
    |x| - 0.5 beta above."""
    ax = jnp.abs(x)
    return jnp.where(ax < beta, 0.5 * x * x / beta, ax - 0.5 * beta)


def _per_image_nms(boxes, scores, groups, valid, threshold: float, max_output: int):
    """`batched_nms_padded` over a leading image axis (vmap of the while loop)."""
    t = _f32_threshold(float(threshold))
    return jax.vmap(lambda b, s, g, v: _nms_core(b, s, g, v, t, max_output=max_output))(
        boxes, scores, groups, valid
    )


def filter_proposals(
    proposals: jax.Array,
    objectness: jax.Array,
    level_sizes: Sequence[int],
    image_sizes: jax.Array,
    *,
    pre_nms_top_n: int,
    post_nms_top_n: int,
    nms_thresh: float,
    score_thresh: float = 0.0,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(boxes [N, post, 4], scores [N, post], valid [N, post]) from decoded anchors `proposals`
    [N, T, 4] and logits [N, T]; `level_sizes` are the anchors per level (static) and
    `image_sizes` [N, 2] the (height, width) each image occupies in the padded batch."""
    objectness = jax.lax.stop_gradient(objectness)
    proposals = jax.lax.stop_gradient(proposals)
    boxes, scores, keeps, offset = [], [], [], 0
    for count in level_sizes:  # NMS within each level, as torchvision's batched_nms by level
        k = min(pre_nms_top_n, count)
        logits, top = jax.lax.top_k(objectness[:, offset : offset + count], k)
        b = jnp.take_along_axis(proposals[:, offset : offset + count], top[..., None], axis=1)
        b = jax.vmap(lambda b, s: clip_boxes_to_image(b, (s[0], s[1])))(b, image_sizes)
        p = jax.nn.sigmoid(logits)
        valid = min_size_mask(b, RPN_MIN_SIZE) & (p >= score_thresh)
        keeps.append(nms_keep_dense(b, p, valid, nms_thresh))
        boxes.append(b)
        scores.append(p)
        offset += count
    boxes, scores = jnp.concatenate(boxes, axis=1), jnp.concatenate(scores, axis=1)
    kept = jnp.concatenate(keeps, axis=1)
    # The best post_nms_top_n kept boxes by score, over all levels (batched_nms' order).
    n_out = min(post_nms_top_n, scores.shape[1])
    ranked, idx = jax.lax.top_k(jnp.where(kept, scores, -1.0), n_out)
    ok = ranked >= 0.0
    out_boxes = jnp.take_along_axis(boxes, idx[..., None], axis=1)
    out_boxes, ranked = jnp.where(ok[..., None], out_boxes, 0.0), jnp.where(ok, ranked, 0.0)
    pad = post_nms_top_n - n_out  # fewer candidates than slots: static padding
    if pad:
        out_boxes = jnp.pad(out_boxes, ((0, 0), (0, pad), (0, 0)))
        ranked, ok = jnp.pad(ranked, ((0, 0), (0, pad))), jnp.pad(ok, ((0, 0), (0, pad)))
    return out_boxes, ranked, ok


def anchor_targets(
    anchors: jax.Array, gt_boxes: jax.Array, gt_valid: jax.Array, matcher: Matcher
) -> tuple[jax.Array, jax.Array]:
    """(labels [T]: 1 object, 0 background, -1 ignored; regression targets [T, 4]) of one
    image's anchors [T, 4] against its padded ground truth [K, 4] / mask [K]
    (`assign_targets_to_anchors` + `BoxCoder(1, 1, 1, 1).encode`; targets of non-positive
    anchors are 0, they are never used)."""
    matches = matcher(_iou(gt_boxes, anchors), gt_valid)
    labels = jnp.where(matches >= 0, 1, jnp.where(matches == BELOW_LOW_THRESHOLD, 0, -1))
    matched = gt_boxes[jnp.maximum(matches, 0)]
    matched = jnp.where((matches >= 0)[:, None], matched, anchors)  # no log(0) on the rest
    return labels.astype(jnp.int32), encode_boxes(matched, anchors)


def sample_anchors(
    labels: jax.Array, key: jax.Array, sampler: BalancedSampler
) -> tuple[jax.Array, jax.Array]:
    """Balanced (positive [N, T], negative [N, T]) masks, one draw per image."""
    keys = jax.random.split(key, labels.shape[0])
    return jax.vmap(sampler)(labels, keys)


def rpn_loss(
    objectness: jax.Array,
    deltas: jax.Array,
    labels: jax.Array,
    targets: jax.Array,
    positive: jax.Array,
    negative: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """(objectness loss, box loss) over the batch: BCE-with-logits mean over the sampled
    anchors, smooth-L1 (beta 1/9) summed over the sampled positives / number sampled
    (torchvision's `RegionProposalNetwork.compute_loss`). Shapes [N, T] and [N, T, 4]."""
    sampled = positive | negative
    count = jnp.maximum(jnp.sum(sampled), 1).astype(jnp.float32)
    bce = optax.sigmoid_binary_cross_entropy(objectness, (labels > 0).astype(objectness.dtype))
    objectness_loss = jnp.sum(jnp.where(sampled, bce, 0.0)) / count
    box = jnp.sum(smooth_l1(deltas - targets, 1.0 / 9.0), axis=-1)
    box_loss = jnp.sum(jnp.where(positive, box, 0.0)) / count
    return objectness_loss, box_loss
