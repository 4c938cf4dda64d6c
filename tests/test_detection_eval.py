"""COCO and VOC detection metrics: equality with pycocotools' COCOeval, the lesson's worked
precision/recall example, a devkit-style loop as the VOC reference, and bad input."""

import contextlib
import io

import numpy as np
import pytest

from jaxcnn import InputError
from jaxcnn import detection as det


def random_dataset(seed: int, n_img: int = 25, quantized: bool = False):
    """Detections near (and far from) the ground truth; `quantized` puts boxes on an 8-px grid
    with sizes at the 32^2 / 96^2 area boundaries, scores with ties, and >100 detections per
    image and class, to hit every tie-break and cut of COCOeval."""
    rng = np.random.default_rng(seed)
    preds, targets = [], []
    for _ in range(n_img):
        m = int(rng.integers(0, 10))
        if quantized:
            sizes = rng.choice([8, 16, 32, 33, 64, 96, 97, 128], (m, 2))
            xy = rng.integers(0, 6, (m, 2)) * 8.0
        else:
            sizes, xy = rng.uniform(4, 200, (m, 2)), rng.uniform(0, 400, (m, 2))
        gt = np.concatenate([xy, xy + sizes], 1).astype(np.float32)
        gl = rng.integers(1, 4, m)
        k = int(rng.integers(0, 160 if quantized else 40))
        if quantized:
            sizes = rng.choice([8, 16, 32, 33, 64, 96, 97, 128], (k, 2))
            xy = rng.integers(0, 6, (k, 2)) * 8.0
            db = np.concatenate([xy, xy + sizes], 1)
            dl = rng.integers(1, 5, k)
            sc = rng.integers(0, 5, k) / 4
        else:
            src = rng.integers(0, max(m, 1), k)
            db = gt[src] + rng.normal(0, 10, (k, 4)) if m else rng.uniform(0, 300, (k, 4))
            far = rng.random(k) < 0.3
            db[far] = rng.uniform(0, 300, (k, 4))[far]
            db[:, 2:] = np.maximum(db[:, 2:], db[:, :2] + 1)
            dl = np.where(rng.random(k) < 0.8, gl[src] if m else 1, rng.integers(1, 5, k))
            sc = rng.random(k)
        preds.append(dict(boxes=db.astype(np.float32), scores=sc.astype(np.float32), labels=dl))
        targets.append(dict(boxes=gt, labels=gl, iscrowd=rng.random(m) < 0.15))
    return preds, targets


def pycocotools_stats(preds, targets) -> np.ndarray:
    """COCOeval(iouType="bbox").stats on the same data, through `to_coco`."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    dataset, results = det.to_coco(preds, targets)
    gt = COCO()
    gt.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(results), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


@pytest.mark.parametrize(
    "seed, quantized", [(0, False), (1, False), (2, True), (3, True), (4, True)]
)
def test_coco_evaluate_equals_pycocotools(seed, quantized):
    pytest.importorskip(
        "pycocotools", reason="pycocotools (the `test` extra) is the reference for COCO mAP"
    )
    preds, targets = random_dataset(seed, quantized=quantized)
    ours = det.coco_evaluate(preds, targets)
    assert list(ours) == list(det.STAT_NAMES)
    np.testing.assert_array_equal(np.array(list(ours.values())), pycocotools_stats(preds, targets))


def test_coco_perfect_detections_score_one_and_absent_sizes_minus_one():
    boxes = np.array(
        [[0, 0, 10, 10], [0, 0, 50, 50], [20, 20, 40, 30]], np.float32
    )  # small, medium, small
    targets = [
        {"boxes": boxes, "labels": np.array([1, 2, 1])},
        {"boxes": np.zeros((0, 4)), "labels": np.zeros(0)},
    ]
    preds = [{"boxes": boxes, "scores": np.array([0.9, 0.8, 0.7]), "labels": np.array([1, 2, 1])},
             {"boxes": np.zeros((0, 4)), "scores": np.zeros(0), "labels": np.zeros(0)}]  # fmt: skip
    out = det.coco_evaluate(preds, targets, per_class=True)
    for key in ("map", "map_50", "map_75", "map_small", "map_medium", "mar_10", "mar_100"):
        assert out[key] == pytest.approx(1.0), key
    assert out["mar_1"] == pytest.approx(0.75)  # class 1 has 2 boxes in one image: 1 of 2 at 1 det
    assert out["map_large"] == -1.0 and out["mar_large"] == -1.0  # no large ground truth
    assert out["map_per_class"] == {1: pytest.approx(1.0), 2: pytest.approx(1.0)}


def test_coco_duplicate_and_wrong_class_detections_lower_precision():
    box = np.array([[0, 0, 40, 40]], np.float32)
    targets = [{"boxes": box, "labels": np.array([1])}]
    preds = [
        {
            "boxes": np.repeat(box, 3, 0),
            "scores": np.array([0.9, 0.8, 0.95]),
            "labels": np.array([1, 1, 2]),
        }
    ]
    out = det.coco_evaluate(preds, targets)
    assert out["map"] == pytest.approx(1.0)  # the duplicate ranks after the hit; class 2 has no gt
    preds[0]["scores"] = np.array([0.5, 0.9, 0.1])
    assert det.coco_evaluate(preds, targets)["map"] == pytest.approx(1.0)
    preds[0]["boxes"] = np.array([[100, 100, 140, 140], [0, 0, 40, 40], [0, 0, 1, 1]], np.float32)
    preds[0]["scores"] = np.array([0.9, 0.5, 0.1])  # a false positive ranked first
    assert det.coco_evaluate(preds, targets)["map_50"] == pytest.approx(0.5)


# ---------------------------------------------------------------- VOC


def test_voc_lesson_three_dogs_precision_recall():
    """The lesson: 3 dogs, detections ranked by score give P/R 1/1 & 1/3, 2/2 & 2/3, 3/5 & 3/3."""
    dogs = np.array([[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]], np.float32)
    dets = np.array(
        [[0, 0, 10, 10], [20, 1, 30, 11], [60, 60, 70, 70], [80, 0, 90, 10], [40, 0, 50, 9]],
        np.float32,
    )
    preds = [
        {"boxes": dets, "scores": np.array([0.95, 0.9, 0.8, 0.7, 0.6]), "labels": np.zeros(5, int)}
    ]
    targets = [{"boxes": dogs, "labels": np.zeros(3, int)}]
    out = det.voc_evaluate(preds, targets)
    np.testing.assert_allclose(out["precision"][0], [1, 1, 2 / 3, 1 / 2, 3 / 5])
    np.testing.assert_allclose(out["recall"][0], [1 / 3, 2 / 3, 2 / 3, 2 / 3, 1])
    assert out["ap"][0] == pytest.approx(2 / 3 * 1 + 1 / 3 * 3 / 5)  # all-point area
    assert out["map"] == out["ap"][0]
    ap07 = det.voc_evaluate(preds, targets, use_07_metric=True)["ap"][0]
    assert ap07 == pytest.approx((7 * 1 + 4 * 3 / 5) / 11)  # recall >= 0..0.6 -> 1, 0.7..1 -> 3/5


def voc_loop_reference(preds, targets, thr=0.5):
    """VOCevaldet.m transcribed as loops (one class at a time): the reference for voc_evaluate."""
    out = {}
    for c in sorted({int(x) for t in targets for x in t["labels"]}):
        gts = [
            (
                t["boxes"][t["labels"] == c],
                t.get("difficult", np.zeros(len(t["labels"]), bool))[t["labels"] == c],
            )
            for t in targets
        ]
        npos = sum(int((~d).sum()) for _, d in gts)
        if npos == 0:
            continue
        taken = [np.zeros(len(b), bool) for b, _ in gts]
        dets = [
            (float(s), i, j)
            for i, p in enumerate(preds)
            for j, s in enumerate(p["scores"])
            if p["labels"][j] == c
        ]
        dets.sort(key=lambda x: -x[0])  # stable
        tp, fp = [], []
        for _, i, j in dets:
            bb, (gb, gd) = preds[i]["boxes"][j].astype(np.float64), gts[i]
            best, jmax = -np.inf, -1
            for k, g in enumerate(gb.astype(np.float64)):
                iw = min(bb[2], g[2]) - max(bb[0], g[0])
                ih = min(bb[3], g[3]) - max(bb[1], g[1])
                if iw > 0 and ih > 0:
                    ov = (
                        iw
                        * ih
                        / (
                            (bb[2] - bb[0]) * (bb[3] - bb[1])
                            + (g[2] - g[0]) * (g[3] - g[1])
                            - iw * ih
                        )
                    )
                    if ov > best:
                        best, jmax = ov, k
            if best >= thr:
                if gd[jmax]:
                    tp.append(0), fp.append(0)
                elif not taken[i][jmax]:
                    taken[i][jmax] = True
                    tp.append(1), fp.append(0)
                else:
                    tp.append(0), fp.append(1)
            else:
                tp.append(0), fp.append(1)
        tpc, fpc = np.cumsum(tp), np.cumsum(fp)
        out[c] = (tpc / np.maximum(tpc + fpc, np.finfo(float).eps), tpc / npos)
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_voc_evaluate_equals_devkit_loop(seed):
    preds, targets = random_dataset(seed, n_img=12)
    rng = np.random.default_rng(seed)
    for t in targets:
        t["difficult"] = rng.random(len(t["labels"])) < 0.2
        del t["iscrowd"]
    ours = det.voc_evaluate(preds, targets)
    ref = voc_loop_reference(preds, targets)
    assert sorted(ours["ap"]) == sorted(ref)
    for c, (prec, rec) in ref.items():
        np.testing.assert_allclose(ours["precision"][c], prec)
        np.testing.assert_allclose(ours["recall"][c], rec)
        assert ours["ap"][c] == pytest.approx(det.average_precision(rec, prec))


# ---------------------------------------------------------------- bad input


def _one(boxes=((0, 0, 2, 2),), scores=(0.5,), labels=(1,)):
    return {
        "boxes": np.array(boxes, np.float32),
        "scores": np.array(scores),
        "labels": np.array(labels),
    }


@pytest.mark.parametrize(
    "preds, targets, match",
    [
        ([], [], "no images"),
        ([_one()], [_one(), _one()], "1 images but targets has 2"),
        ([_one(scores=(np.nan,))], [_one()], "scores'\\] contains NaN"),
        ([_one(boxes=((0, 0, np.inf, 2),))], [_one()], "not finite"),
        ([_one()], [_one(boxes=((3, 0, 2, 2),))], "x2 < x1"),
        ([_one(labels=(-1,))], [_one()], "negative label"),
        ([_one(labels=(1.5,))], [_one()], "must be integers"),
        ([{"boxes": np.zeros((1, 4)), "labels": np.ones(1)}], [_one()], "no 'scores'"),
        ([_one(scores=(0.1, 0.2))], [_one()], "has 2 entries"),
    ],
)
@pytest.mark.parametrize("metric", [det.coco_evaluate, det.voc_evaluate])
def test_metrics_reject_bad_input(metric, preds, targets, match):
    with pytest.raises(InputError, match=match):
        metric(preds, targets)


def test_metrics_accept_images_without_boxes_and_unpad():
    boxes = np.zeros((2, 3, 4), np.float32)
    boxes[0, 0] = [0, 0, 10, 10]
    valid = np.array([[True, False, False], [False, False, False]])
    targets = det.unpad(boxes, np.ones((2, 3), int), valid)
    preds = det.unpad(boxes, np.ones((2, 3), int), valid, scores=np.ones((2, 3)))
    assert [len(t["boxes"]) for t in targets] == [1, 0]
    assert det.coco_evaluate(preds, targets)["map"] == pytest.approx(1.0)
    assert det.voc_evaluate(preds, targets)["map"] == pytest.approx(1.0)


def test_no_ground_truth_at_all_warns_and_reports_minus_one():
    preds = [_one()]
    targets = [{"boxes": np.zeros((0, 4)), "labels": np.zeros(0, int)}]
    with pytest.warns(UserWarning, match="no box"):
        assert set(det.coco_evaluate(preds, targets).values()) == {-1.0}
    with pytest.warns(UserWarning, match="no class"):
        assert det.voc_evaluate(preds, targets)["map"] == -1.0
