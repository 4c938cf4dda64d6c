"""The second stage of Faster R-CNN (Girshick, Fast R-CNN, 2015; Ren et al., 2015), as
torchvision's `RoIHeads` (torchvision/models/detection/roi_heads.py), jittable with static
shapes (padded proposals and ground truth with masks):

- `sample_proposals`: the ground-truth boxes join the proposals (`add_gt_proposals`), each is
  matched to its best box (IoU >= 0.5 foreground with that box's class, < 0.5 background), and a
  balanced sample of `batch_size_per_image` (a quarter positive at most) is drawn
  (`select_training_samples`), with regression targets (box coder weights 10, 10, 5, 5);
- `fastrcnn_loss`: cross-entropy over the sampled RoIs, smooth-L1 (beta 1/9) of the true class's
  deltas over the positives divided by the number sampled (`fastrcnn_loss`);
- `postprocess_detections`: softmax, per-class decoding, clip, drop the background column,
  scores > `score_thresh`, sides >= 1e-2, per-class NMS at `nms_thresh`, the best
  `detections_per_img` (`postprocess_detections`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from jaxcnn.detection.boxes import _iou, clip_boxes_to_image, min_size_mask
from jaxcnn.detection.coder import decode_boxes, encode_boxes
from jaxcnn.detection.matching import (
    BELOW_LOW_THRESHOLD,
    BETWEEN_THRESHOLDS,
    BalancedSampler,
    Matcher,
)
from jaxcnn.detection.rpn import _per_image_nms, smooth_l1

BOX_CODER_WEIGHTS = (10.0, 10.0, 5.0, 5.0)  # torchvision's RoIHeads bbox_reg_weights default
DETECTION_MIN_SIZE = 1e-2  # torchvision's remove_small_boxes(min_size=1e-2) in postprocessing


def proposal_labels(
    proposals: jax.Array,
    valid: jax.Array,
    gt_boxes: jax.Array,
    gt_labels: jax.Array,
    gt_valid: jax.Array,
    matcher: Matcher,
) -> tuple[jax.Array, jax.Array]:
    """(class labels [P]: >= 1 foreground, 0 background, -1 ignored or padding; matched
    ground-truth index [P], clamped at 0) of one image's proposals (`assign_targets_to_
    proposals`)."""
    matches = matcher(_iou(gt_boxes, proposals), gt_valid, valid)
    index = jnp.maximum(matches, 0)
    labels = gt_labels[index].astype(jnp.int32)
    labels = jnp.where(matches == BELOW_LOW_THRESHOLD, 0, labels)
    labels = jnp.where(matches == BETWEEN_THRESHOLDS, -1, labels)
    return labels, index


def sample_proposals(
    proposals: jax.Array,
    valid: jax.Array,
    gt_boxes: jax.Array,
    gt_labels: jax.Array,
    gt_valid: jax.Array,
    matcher: Matcher,
    sampler: BalancedSampler,
    key: jax.Array | None = None,
    sampled: tuple[jax.Array, jax.Array] | None = None,
) -> dict[str, jax.Array]:
    """The RoIs one image trains its box head on: proposals [P, 4] (mask [P]) plus the ground
    truth [K, 4] ([K] labels >= 1, mask [K]); a balanced sample drawn from `key`, or the given
    `sampled` (positive, negative) masks over the P + K candidates (to reproduce a draw).
    Returns {"boxes" [B, 4], "labels" [B], "targets" [B, 4], "valid" [B]} with B the sampler's
    batch_size_per_image, in increasing candidate order (torchvision's `torch.where`)."""
    boxes = jnp.concatenate([proposals, gt_boxes], axis=0)
    ok = jnp.concatenate([valid, gt_valid], axis=0)
    labels, index = proposal_labels(boxes, ok, gt_boxes, gt_labels, gt_valid, matcher)
    if sampled is None:
        sampled = sampler(labels, key)
    idx, chosen = sampler.indices(*sampled)
    safe = jnp.maximum(idx, 0)
    roi_boxes = boxes[safe]
    roi_labels = jnp.where(chosen, labels[safe], -1)
    positive = roi_labels > 0
    matched = jnp.where(positive[:, None], gt_boxes[index[safe]], roi_boxes)
    unit = jnp.broadcast_to(jnp.asarray([0.0, 0.0, 1.0, 1.0], roi_boxes.dtype), roi_boxes.shape)
    safe_boxes = jnp.where(chosen[:, None], roi_boxes, unit)
    targets = encode_boxes(jnp.where(chosen[:, None], matched, safe_boxes), safe_boxes,
                           BOX_CODER_WEIGHTS)  # fmt: skip
    return {"boxes": safe_boxes, "labels": roi_labels, "targets": targets, "valid": chosen}


def fastrcnn_loss(
    class_logits: jax.Array,
    box_regression: jax.Array,
    labels: jax.Array,
    targets: jax.Array,
    valid: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """(classification loss, box loss) over all sampled RoIs of the batch: logits [R, C],
    deltas [R, 4C], labels [R], targets [R, 4], mask [R] (torchvision's `fastrcnn_loss`)."""
    count = jnp.maximum(jnp.sum(valid), 1).astype(jnp.float32)
    safe_labels = jnp.maximum(labels, 0)
    ce = optax.softmax_cross_entropy_with_integer_labels(class_logits, safe_labels)
    classification = jnp.sum(jnp.where(valid, ce, 0.0)) / count
    deltas = box_regression.reshape(box_regression.shape[0], -1, 4)
    picked = jnp.take_along_axis(deltas, safe_labels[:, None, None], axis=1)[:, 0]
    box = jnp.sum(smooth_l1(picked - targets, 1.0 / 9.0), axis=-1)
    positive = valid & (labels > 0)
    return classification, jnp.sum(jnp.where(positive, box, 0.0)) / count


def postprocess_detections(
    class_logits: jax.Array,
    box_regression: jax.Array,
    proposals: jax.Array,
    valid: jax.Array,
    image_sizes: jax.Array,
    *,
    score_thresh: float,
    nms_thresh: float,
    detections_per_img: int,
) -> dict[str, jax.Array]:
    """Detections of a batch: logits [N, P, C], deltas [N, P, 4C], proposals [N, P, 4] with
    mask [N, P], image sizes [N, 2] (h, w) -> {"boxes" [N, D, 4], "scores" [N, D], "labels"
    [N, D] (1..C-1), "valid" [N, D]} with D = detections_per_img, by decreasing score."""
    n, p, num_classes = class_logits.shape
    boxes = decode_boxes(box_regression, proposals, BOX_CODER_WEIGHTS)
    boxes = boxes.reshape(n, p, num_classes, 4)
    boxes = jax.vmap(lambda b, s: clip_boxes_to_image(b, (s[0], s[1])))(boxes, image_sizes)
    scores = jax.nn.softmax(class_logits, axis=-1)
    boxes = boxes[:, :, 1:].reshape(n, -1, 4)
    scores = scores[:, :, 1:].reshape(n, -1)
    labels = jnp.broadcast_to(jnp.arange(1, num_classes, dtype=jnp.int32), (n, p, num_classes - 1))
    labels = labels.reshape(n, -1)
    ok = jnp.repeat(valid, num_classes - 1, axis=1) & (scores > score_thresh)
    ok = ok & min_size_mask(boxes, DETECTION_MIN_SIZE)
    keep, kept = _per_image_nms(boxes, scores, labels, ok, nms_thresh, detections_per_img)
    safe = jnp.maximum(keep, 0)
    return {
        "boxes": jnp.where(kept[..., None],
                           jnp.take_along_axis(boxes, safe[..., None], axis=1), 0.0),
        "scores": jnp.where(kept, jnp.take_along_axis(scores, safe, axis=1), 0.0),
        "labels": jnp.where(kept, jnp.take_along_axis(labels, safe, axis=1), 0),
        "valid": kept,
    }  # fmt: skip
