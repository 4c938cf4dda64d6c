"""COCO box mAP: the twelve numbers of pycocotools' `COCOeval(iouType="bbox")`
(`evaluate()`, `accumulate()`, `summarize()`), reimplemented with vectorized numpy.

The semantics are pycocotools', decision for decision:
- categories are the labels that have ground truth; images are the list positions;
- per (image, category), detections sorted by score (stable) and cut at 100; the IoU is
  pycocotools' float64 `bbIou` on (x, y, w, h) boxes, with intersection / detection area
  against a crowd ("iscrowd") box;
- greedy matching in score order at each IoU threshold 0.50:0.05:0.95: a detection takes the
  unmatched ground truth of highest IoU >= threshold (the last one among equal IoUs), ground
  truths that are crowd or outside the area range ("ignored") only when no other qualifies;
  crowd boxes can be matched again. Detections matched to ignored boxes, or unmatched and
  outside the area range, are ignored;
- precision at 101 recall points from the right-to-left maximum of the precision curve, recall
  at 1, 10, 100 detections; areas small < 32^2 <= medium <= 96^2 < large (box area w * h);
- a summary averages the entries that are defined, and is -1 when none is (e.g. no ground
  truth of that size), as pycocotools prints.

The matching loop runs over detection ranks (at most 100 steps), vectorized over all
(image, category) groups, the 4 area ranges and the 10 IoU thresholds at once.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np

from jaxcnn.detection.eval_inputs import FlatDetections, flatten_detections

IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
MAX_DETECTIONS = (1, 10, 100)
AREA_RANGES = {
    "all": (0.0, 1e5**2),
    "small": (0.0, 32.0**2),
    "medium": (32.0**2, 96.0**2),
    "large": (96.0**2, 1e5**2),
}
STAT_NAMES = (
    "map", "map_50", "map_75", "map_small", "map_medium", "map_large",
    "mar_1", "mar_10", "mar_100", "mar_small", "mar_medium", "mar_large",
)  # fmt: skip
"""The keys of `coco_evaluate`'s result, in the order of `COCOeval.stats`."""


def _xywh(boxes: np.ndarray) -> np.ndarray:
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)


def _bb_iou(det: np.ndarray, gt: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """pycocotools' maskApi `bbIou` for det [..., 4] against gt [..., M, 4] (xywh, float64)."""
    d = det[..., None, :]
    w = np.minimum(d[..., 2] + d[..., 0], gt[..., 2] + gt[..., 0]) - np.maximum(
        d[..., 0], gt[..., 0]
    )
    h = np.minimum(d[..., 3] + d[..., 1], gt[..., 3] + gt[..., 1]) - np.maximum(
        d[..., 1], gt[..., 1]
    )
    inter = w * h
    da = d[..., 2] * d[..., 3]
    union = np.where(crowd, da, da + gt[..., 2] * gt[..., 3] - inter)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / union
    return np.where((w > 0) & (h > 0), iou, 0.0)


def _last_argmax(values: np.ndarray, eligible: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the last maximum of `values` over the eligible entries of the last axis, and
    whether any entry is eligible."""
    v = np.where(eligible, values, -1.0)[..., ::-1]
    return v.shape[-1] - 1 - np.argmax(v, axis=-1), eligible.any(axis=-1)


def _match(flat: FlatDetections, cats: np.ndarray, det_rank: np.ndarray, keep: np.ndarray):
    """Greedy matching of every kept detection: (matched [D, A, T], ignored [D, A, T])."""
    areas = np.array(list(AREA_RANGES.values()))  # [A, 2]
    thresholds = np.minimum(IOU_THRESHOLDS, 1 - 1e-10)
    n_det = len(flat.det_scores)
    matched = np.zeros((n_det, len(areas), len(thresholds)), bool)
    ignored = np.zeros_like(matched)
    det_xywh, gt_xywh = _xywh(flat.det_boxes), _xywh(flat.gt_boxes)
    gt_area = gt_xywh[:, 2] * gt_xywh[:, 3]
    gt_ign = (
        flat.gt_crowd[:, None] | (gt_area[:, None] < areas[:, 0]) | (gt_area[:, None] > areas[:, 1])
    )

    num_cats = len(cats)
    cat_of_gt = np.searchsorted(cats, flat.gt_labels)
    gt_group = flat.gt_image * num_cats + cat_of_gt
    cat_of_det = np.searchsorted(cats, flat.det_labels)
    det_group = flat.det_image * num_cats + cat_of_det
    # Ground truths of each group in their input order, padded into one [groups, M] table.
    gt_order = np.lexsort((np.arange(len(gt_group)), gt_group))
    groups, gt_start, gt_count = np.unique(
        gt_group[gt_order], return_index=True, return_counts=True
    )
    kept = np.flatnonzero(keep)
    det_gi = np.searchsorted(groups, det_group[kept])
    has_gt = (det_gi < len(groups)) & (
        groups[np.minimum(det_gi, len(groups) - 1)] == det_group[kept]
    )
    kept, det_gi = kept[has_gt], det_gi[has_gt]  # detections of groups without ground truth
    if len(kept) == 0:  # stay unmatched
        return matched, ignored

    # Bucket groups by ground-truth count (powers of two) to bound the padding.
    bucket = np.ceil(np.log2(gt_count[det_gi])).astype(int)
    for b in np.unique(bucket):
        sel = kept[bucket == b]
        gi = det_gi[bucket == b]
        ugroups, local = np.unique(gi, return_inverse=True)
        width = int(gt_count[ugroups].max())
        slot = np.arange(width)
        real = slot[None, :] < gt_count[ugroups][:, None]  # [G, M]
        gidx = gt_order[np.minimum(gt_start[ugroups][:, None] + slot[None, :], len(gt_order) - 1)]
        g_box, g_crowd = gt_xywh[gidx], flat.gt_crowd[gidx] & real
        g_ign = np.moveaxis(gt_ign[gidx], -1, 1)  # [G, A, M]
        used = np.zeros((len(ugroups), len(areas), len(thresholds), width), bool)
        ranks = det_rank[sel]
        for r in range(int(ranks.max()) + 1):
            at = ranks == r
            d, g = sel[at], local[at]
            iou = _bb_iou(det_xywh[d], g_box[g], g_crowd[g])  # [n, M]
            ok = real[g][:, None, None, :] & (
                iou[:, None, None, :] >= thresholds[None, None, :, None]
            )
            ok = ok & (g_crowd[g][:, None, None, :] | ~used[g])
            ign = g_ign[g][:, :, None, :]
            iou4 = np.broadcast_to(iou[:, None, None, :], ok.shape)
            m1, has1 = _last_argmax(iou4, ok & ~ign)
            m2, has2 = _last_argmax(iou4, ok & ign)
            m = np.where(has1, m1, m2)
            hit = has1 | has2
            gg, aa, tt = np.nonzero(hit)
            used[g[gg], aa, tt, m[gg, aa, tt]] = True
            matched[d] = hit
            ignored[d] = ~has1 & has2
    return matched, ignored


def _accumulate(flat: FlatDetections, cats, det_rank, keep, matched, ignored):
    """pycocotools' precision [T, R, K, A, M] and recall [T, K, A, M] arrays (-1 = undefined)."""
    areas = np.array(list(AREA_RANGES.values()))
    n_t, n_r, n_k, n_a, n_m = (
        len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS), len(cats), len(areas), len(MAX_DETECTIONS),
    )  # fmt: skip
    precision = -np.ones((n_t, n_r, n_k, n_a, n_m))
    recall = -np.ones((n_t, n_k, n_a, n_m))
    gt_xywh = _xywh(flat.gt_boxes)
    gt_area = gt_xywh[:, 2] * gt_xywh[:, 3]
    det_xywh = _xywh(flat.det_boxes)
    det_area = det_xywh[:, 2] * det_xywh[:, 3]
    det_out = (det_area[:, None] < areas[:, 0]) | (det_area[:, None] > areas[:, 1])  # [D, A]
    gt_cat = np.searchsorted(cats, flat.gt_labels)
    det_cat = np.searchsorted(cats, flat.det_labels)
    # pycocotools concatenates images in order, each sorted by score, then merge-sorts by score.
    order = np.lexsort((det_rank, flat.det_image, -flat.det_scores, det_cat))
    order = order[keep[order]]
    rank_sorted, cat_sorted = det_rank[order], det_cat[order]
    hit_all = matched[order]  # [D', A, T]
    scored_all = ~(ignored[order] | (~hit_all & det_out[order][:, :, None]))
    for a, (lo, hi) in enumerate(areas):
        counted = ~flat.gt_crowd & (gt_area >= lo) & (gt_area <= hi)
        npig = np.bincount(gt_cat[counted], minlength=n_k)
        hit, scored = hit_all[:, a, :], scored_all[:, a, :]
        tps_all, fps_all = hit & scored, ~hit & scored
        for mi, max_det in enumerate(MAX_DETECTIONS):
            sel = rank_sorted < max_det
            # Cumulative TP/FP counts over the whole sorted list; a category's counts are a
            # slice minus the count before it (integer, so identical to a per-category cumsum).
            tp_all = np.cumsum(np.ascontiguousarray(tps_all[sel].T), axis=1, dtype=np.int32)
            fp_all = np.cumsum(np.ascontiguousarray(fps_all[sel].T), axis=1, dtype=np.int32)
            bounds = np.searchsorted(cat_sorted[sel], np.arange(n_k + 1))
            for k in np.flatnonzero(npig):
                lo_k, hi_k = bounds[k], bounds[k + 1]
                nd = hi_k - lo_k
                if nd == 0:
                    recall[:, k, a, mi] = 0.0
                    precision[:, :, k, a, mi] = 0.0
                    continue
                tp, fp = tp_all[:, lo_k:hi_k], fp_all[:, lo_k:hi_k]
                if lo_k:
                    tp, fp = tp - tp_all[:, lo_k - 1 : lo_k], fp - fp_all[:, lo_k - 1 : lo_k]
                tp, fp = tp.astype(float), fp.astype(float)
                rc = tp / npig[k]
                pr = tp / (fp + tp + np.spacing(1))
                recall[:, k, a, mi] = rc[:, -1]
                pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]
                for t in range(n_t):
                    inds = np.searchsorted(rc[t], RECALL_THRESHOLDS, side="left")
                    q = np.where(inds < nd, pr[t, np.minimum(inds, nd - 1)], 0.0)
                    precision[t, :, k, a, mi] = q
    return precision, recall


def _mean_defined(s: np.ndarray) -> float:
    s = s[s > -1]
    return float(np.mean(s)) if len(s) else -1.0


def coco_evaluate(
    predictions: Sequence[Mapping], targets: Sequence[Mapping], *, per_class: bool = False
) -> dict:
    """COCO box mAP of per-image `predictions` against `targets` (see `eval_inputs`): a dict
    with the `STAT_NAMES` keys equal to pycocotools' `COCOeval(iouType="bbox").stats`, and with
    `per_class=True` also "map_per_class" {label: AP@[.5:.95]} (-1 for a class whose
    ground truth is all crowd)."""
    flat = flatten_detections(predictions, targets)
    cats = np.unique(flat.gt_labels)
    if len(cats) == 0:  # nothing to find: every summary is undefined, as in pycocotools
        warnings.warn(
            "coco_evaluate: the targets hold no box, so every stat is -1 (undefined)", stacklevel=2
        )
        return {name: -1.0 for name in STAT_NAMES} | ({"map_per_class": {}} if per_class else {})
    # Rank of each detection within its (image, label) group by decreasing score (stable).
    order = np.lexsort(
        (np.arange(len(flat.det_scores)), -flat.det_scores, flat.det_labels, flat.det_image)
    )
    key = flat.det_image[order] * (int(flat.det_labels.max(initial=0)) + 1) + flat.det_labels[order]
    starts = np.r_[0, np.flatnonzero(np.diff(key)) + 1]
    rank_sorted = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    det_rank = np.empty(len(order), np.int64)
    det_rank[order] = rank_sorted
    det_cat = np.searchsorted(cats, flat.det_labels)
    known = (det_cat < len(cats)) & (cats[np.minimum(det_cat, len(cats) - 1)] == flat.det_labels)
    keep = (det_rank < MAX_DETECTIONS[-1]) & known  # no ground truth of its label: not scored

    matched, ignored = _match(flat, cats, det_rank, keep)
    precision, recall = _accumulate(flat, cats, det_rank, keep, matched, ignored)

    def ap(t=None, area=0, m=2):
        s = precision[:, :, :, area, m]
        return _mean_defined(s if t is None else s[t])

    def ar(area=0, m=2):
        return _mean_defined(recall[:, :, area, m])

    stats = [ap(), ap(t=0), ap(t=5), ap(area=1), ap(area=2), ap(area=3),
             ar(m=0), ar(m=1), ar(m=2), ar(area=1), ar(area=2), ar(area=3)]  # fmt: skip
    result = dict(zip(STAT_NAMES, stats, strict=True))
    if per_class:
        result["map_per_class"] = {
            int(c): _mean_defined(precision[:, :, k, 0, 2]) for k, c in enumerate(cats)
        }
    return result
