"""jaxcnn.detection ops against torchvision's numbers (tests/golden/detection.npz, written by
tests/golden/make_detection_golden.py), under jit too, and their bad-input errors."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import InputError
from jaxcnn import detection as det

GOLDEN = np.load(Path(__file__).parent / "golden" / "detection.npz")


def g(name):
    return GOLDEN[name]


# ---------------------------------------------------------------- boxes


def test_box_iou_giou_area_match_torchvision():
    b1, b2 = g("iou_boxes1"), g("iou_boxes2")
    np.testing.assert_allclose(det.box_iou(b1, b2), g("box_iou"), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(
        det.generalized_box_iou(b1, b2), g("generalized_box_iou"), rtol=1e-6, atol=1e-7
    )
    np.testing.assert_allclose(det.box_area(b1), g("box_area"), rtol=1e-6)


def test_box_convert_matches_torchvision_and_round_trips():
    b = g("iou_boxes1")
    for fmt in ("xywh", "cxcywh"):
        out = det.box_convert(b, "xyxy", fmt)
        np.testing.assert_allclose(out, g(f"convert_xyxy_{fmt}"), rtol=1e-6)
        np.testing.assert_allclose(det.box_convert(out, fmt, "xyxy"), b, atol=1e-5)
    np.testing.assert_allclose(
        det.box_convert(det.box_convert(b, "xyxy", "xywh"), "xywh", "cxcywh"),
        g("convert_xyxy_cxcywh"),
        rtol=1e-6,
    )


def test_clip_and_remove_small_match_torchvision():
    h, w = g("clip_size")
    boxes = np.clip(g("iou_boxes1") - 10, -5, None)
    boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2])
    np.testing.assert_allclose(
        det.clip_boxes_to_image(g("iou_boxes1") - 10, (int(h), int(w))), g("clip_boxes")
    )
    np.testing.assert_array_equal(
        det.remove_small_boxes(g("iou_boxes1"), 8.0), g("remove_small_keep")
    )


def test_iou_of_two_empty_boxes_is_zero_not_nan():
    point = np.array([[3.0, 3.0, 3.0, 3.0]], np.float32)
    assert float(det.box_iou(point, point)[0, 0]) == 0.0
    gr = jax.grad(lambda b: det.box_iou(b, b + 1.0).sum())(jnp.asarray(point))
    assert np.isfinite(np.asarray(gr)).all()


def test_box_iou_is_batched_and_jittable():
    b1, b2 = g("iou_boxes1"), g("iou_boxes2")
    stacked = jax.jit(det.box_iou)(np.stack([b1, b1[::-1]]), np.stack([b2, b2]))
    np.testing.assert_allclose(stacked[1], g("box_iou")[::-1], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    "boxes, match",
    [
        (np.array([[0, 0, 1, np.nan]]), "NaN or infinite"),
        (np.array([[0, 0, np.inf, 1]]), "NaN or infinite"),
        (np.array([[5, 0, 2, 4]]), "x2 < x1"),
        (np.zeros((3, 5)), r"\[\.\.\., 4\]"),
    ],
)
def test_bad_boxes_raise_input_error(boxes, match):
    with pytest.raises(InputError, match=match):
        det.box_iou(boxes, np.array([[0.0, 0.0, 1.0, 1.0]]))


def test_empty_box_lists_give_empty_results():
    empty = np.zeros((0, 4), np.float32)
    assert det.box_iou(empty, g("iou_boxes2")).shape == (0, 9)
    assert det.nms(empty, np.zeros(0, np.float32), 0.5).shape == (0,)
    keep, ok = det.nms_padded(empty, np.zeros(0, np.float32), 0.5, max_output=3)
    assert keep.tolist() == [-1, -1, -1] and not ok.any()


# ---------------------------------------------------------------- nms


def test_nms_matches_torchvision_at_every_threshold():
    boxes, scores = g("nms_boxes"), g("nms_scores")
    for i, thr in enumerate(g("nms_thresholds")):
        np.testing.assert_array_equal(det.nms(boxes, scores, float(thr)), g(f"nms_keep_{i}"))
    np.testing.assert_array_equal(
        det.nms(g("nms_big_boxes"), g("nms_big_scores"), 0.5), g("nms_big_keep")
    )


def test_nms_iou_exactly_at_threshold_is_kept_as_torchvision():
    b, s = g("nms_edge_boxes"), g("nms_edge_scores")
    np.testing.assert_array_equal(det.nms(b, s, 0.5), g("nms_edge_keep_050"))
    np.testing.assert_array_equal(det.nms(b, s, 0.4999), g("nms_edge_keep_04999"))


def test_nms_padded_under_jit_is_torchvisions_prefix():
    boxes, scores = g("nms_boxes"), g("nms_scores")
    want = g("nms_keep_2")  # threshold 0.5
    fn = jax.jit(det.nms_padded, static_argnames=("iou_threshold", "max_output"))
    for k in (5, len(want), len(want) + 7):
        keep, ok = fn(boxes, scores, iou_threshold=0.5, max_output=k)
        n = min(k, len(want))
        np.testing.assert_array_equal(keep[:n], want[:n])
        assert ok.tolist() == [True] * n + [False] * (k - n)
        assert (np.asarray(keep)[n:] == -1).all()


def test_nms_padded_ignores_invalid_rows_and_vmaps_over_images():
    boxes, scores = g("nms_boxes"), g("nms_scores")
    valid = np.arange(len(boxes)) % 3 != 0
    sub = np.flatnonzero(valid)
    want = sub[det.nms(boxes[sub], scores[sub], 0.5)]
    keep, ok = jax.vmap(lambda b, s, v: det.nms_padded(b, s, 0.5, 60, valid=v))(
        np.stack([boxes, boxes]), np.stack([scores, scores]), np.stack([valid, np.ones_like(valid)])
    )
    np.testing.assert_array_equal(np.asarray(keep[0])[np.asarray(ok[0])], want)
    np.testing.assert_array_equal(np.asarray(keep[1])[np.asarray(ok[1])], g("nms_keep_2"))


def test_batched_nms_matches_both_torchvision_paths():
    boxes, scores, idxs = g("nms_boxes"), g("nms_scores"), g("batched_idxs")
    keep = det.batched_nms(boxes, scores, idxs, 0.5)
    np.testing.assert_array_equal(keep, g("batched_keep"))
    np.testing.assert_array_equal(keep, g("batched_keep_vanilla"))
    # Per-class NMS written as a loop over classes gives the same set.
    loop = np.concatenate(
        [
            np.flatnonzero(idxs == c)[det.nms(boxes[idxs == c], scores[idxs == c], 0.5)]
            for c in range(3)
        ]
    )
    assert sorted(loop.tolist()) == sorted(keep.tolist())
    padded, ok = jax.jit(lambda b, s, c: det.batched_nms_padded(b, s, c, 0.5, 80))(
        boxes, scores, idxs
    )
    np.testing.assert_array_equal(np.asarray(padded)[np.asarray(ok)], keep)


def test_nms_rejects_nan_scores_and_shape_mismatch():
    with pytest.raises(InputError, match="scores contain NaN"):
        det.nms(g("nms_boxes")[:2], np.array([0.5, np.nan], np.float32), 0.5)
    with pytest.raises(InputError, match="boxes \\[N, 4\\] and scores \\[N\\]"):
        det.nms(g("nms_boxes")[:3], np.ones(2, np.float32), 0.5)
    with pytest.raises(InputError, match="max_output"):
        det.nms_padded(g("nms_boxes"), g("nms_scores"), 0.5, 0)


# ---------------------------------------------------------------- box coder


@pytest.mark.parametrize(
    "name, weights", [("w1", (1.0, 1.0, 1.0, 1.0)), ("w10", (10.0, 10.0, 5.0, 5.0))]
)
def test_encode_decode_match_torchvision_box_coder(name, weights):
    props, gt, rel = g("coder_proposals"), g("coder_gt"), g("coder_rel")
    enc = det.encode_boxes(gt, props, weights)
    np.testing.assert_allclose(enc, g(f"coder_encode_{name}"), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        det.decode_boxes(rel, props, weights), g(f"coder_decode_{name}"), rtol=1e-5, atol=1e-4
    )
    np.testing.assert_allclose(det.decode_boxes(enc, props, weights), gt, rtol=1e-5, atol=1e-4)


def test_decode_clamps_large_deltas_like_torchvision():
    ref = np.array([[0.0, 0.0, 10.0, 10.0]], np.float32)
    out = det.decode_boxes(np.array([[0.0, 0.0, 50.0, 0.0]], np.float32), ref)
    np.testing.assert_allclose(out[0, 2] - out[0, 0], 10.0 * 1000 / 16, rtol=1e-5)


def test_encode_rejects_empty_proposals():
    with pytest.raises(InputError, match="zero width or height"):
        det.encode_boxes(np.array([[0, 0, 4, 4.0]]), np.array([[2, 2, 2, 5.0]]))


# ---------------------------------------------------------------- RoI pool / RoI Align


def _value_and_vjp(fn, x, cot):
    """fn(x) and the gradient of sum(fn(x) * cot), from one compiled function."""

    @jax.jit
    def both(x):
        out, pullback = jax.vjp(fn, x)
        return out, pullback(cot)[0]

    return both(x)


def _roi_case(key):
    return g("roi_features"), g("roi_boxes"), g(key), g(key + "_cot"), g(key + "_grad")


@pytest.mark.parametrize(
    "scale, size", [(1.0, (3, 4)), (1.0, (2, 2)), (0.5, (3, 4)), (0.5, (2, 2))]
)
def test_roi_pool_matches_torchvision_with_gradients(scale, size):
    feat, rois, out, cot, grad = _roi_case(f"roi_pool_s{scale}_{size[0]}x{size[1]}")
    got, got_grad = _value_and_vjp(lambda x: det.roi_pool(x, rois, size, scale), feat, cot)
    np.testing.assert_array_equal(got, out)
    np.testing.assert_allclose(got_grad, grad, atol=1e-6)


ALIGN = [f"roi_align_a{a}_r{r}_s{s}" for a in (0, 1) for r in (-1, 2) for s in (1.0, 0.5)]


@pytest.mark.parametrize("key", ALIGN)
def test_roi_align_matches_torchvision_with_gradients(key):
    feat, rois, out, cot, grad = _roi_case(key)
    aligned, ratio, scale = key.split("_")[2:]
    kw = dict(
        output_size=out.shape[1:3],
        spatial_scale=float(scale[1:]),
        sampling_ratio=int(ratio[1:]),
        aligned=aligned == "a1",
    )
    got, got_grad = _value_and_vjp(lambda x: det.roi_align(x, rois, **kw), feat, cot)
    np.testing.assert_allclose(got, out, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_grad, grad, rtol=1e-5, atol=1e-5)


def test_roi_align_under_jit_with_traced_boxes_equals_eager():
    feat, rois, out, _, _ = _roi_case("roi_align_a0_r-1_s1.0")
    fn = jax.jit(lambda f, b: det.roi_align(f, b, (3, 4)))
    np.testing.assert_allclose(fn(feat, rois), out, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fn(feat, rois[::-1]), out[::-1], rtol=1e-5, atol=1e-6)


def test_roi_pool_lesson_4x4_example():
    """d2l.ai's RoI pooling example: 4x4 map, rois at 1/10 scale, 2x2 output."""
    x = np.arange(16.0, dtype=np.float32).reshape(1, 4, 4, 1)
    rois = np.array([[0, 0, 0, 20, 20], [0, 0, 10, 30, 30]], np.float32)
    out = det.roi_pool(x, rois, (2, 2), spatial_scale=0.1)[..., 0]
    np.testing.assert_array_equal(out, [[[5, 6], [9, 10]], [[9, 11], [13, 15]]])
    np.testing.assert_array_equal(out, g("roi_pool_lesson"))


def test_roi_pool_lesson_8x8_example():
    """The 8x8 map of the RoI pooling lesson, region (0, 3)-(7, 8) (x, y), 2x2 output: torchvision
    rounds the corners, the region is 8 x 6 cells (clipped at row 7), bins 4 wide and 3 high."""
    fmap = np.array(
        [
            [0.88, 0.44, 0.14, 0.16, 0.37, 0.77, 0.96, 0.27],
            [0.19, 0.45, 0.57, 0.16, 0.63, 0.29, 0.71, 0.70],
            [0.66, 0.26, 0.82, 0.64, 0.54, 0.73, 0.59, 0.26],
            [0.85, 0.34, 0.76, 0.84, 0.29, 0.75, 0.62, 0.25],
            [0.32, 0.74, 0.21, 0.39, 0.34, 0.03, 0.33, 0.48],
            [0.20, 0.14, 0.16, 0.13, 0.73, 0.65, 0.96, 0.32],
            [0.19, 0.69, 0.09, 0.86, 0.88, 0.07, 0.01, 0.48],
            [0.83, 0.24, 0.97, 0.04, 0.24, 0.35, 0.50, 0.91],
        ],
        np.float32,
    )
    out = det.roi_pool(fmap[None, :, :, None], np.array([[0, 0, 3, 7, 8]], np.float32), (2, 2))
    want = [
        [fmap[3:6, 0:4].max(), fmap[3:6, 4:8].max()],
        [fmap[6:8, 0:4].max(), fmap[6:8, 4:8].max()],
    ]
    np.testing.assert_array_equal(out[0, :, :, 0], want)
    np.testing.assert_allclose(want, [[0.85, 0.96], [0.97, 0.91]])


@pytest.mark.parametrize("op", [det.roi_pool, det.roi_align])
def test_roi_ops_bad_input(op):
    feat = np.zeros((2, 5, 5, 3), np.float32)
    with pytest.raises(InputError, match="batch index 2"):
        op(feat, np.array([[2, 0, 0, 3, 3]], np.float32), 2)
    with pytest.raises(InputError, match=r"\[K, 5\]"):
        op(feat, np.array([[0, 0, 3, 3]], np.float32), 2)
    with pytest.raises(InputError, match="NHWC"):
        op(feat[0], np.array([[0, 0, 0, 3, 3]], np.float32), 2)
    with pytest.raises(InputError, match="not finite"):
        op(feat, np.array([[0, 0, np.nan, 3, 3]], np.float32), 2)
    assert op(feat, np.zeros((0, 5), np.float32), (2, 3)).shape == (0, 2, 3, 3)


# ---------------------------------------------------------------- anchors


def test_anchor_generator_matches_torchvision():
    fpn = det.AnchorGenerator(((16,), (32,)), ((0.5, 1.0, 2.0),) * 2)
    np.testing.assert_array_equal(fpn((64, 80), [(16, 20), (8, 10)]), g("anchors_fpn"))
    assert fpn.num_anchors_per_location() == [3, 3]
    default = det.AnchorGenerator()
    np.testing.assert_array_equal(default.cell_anchors()[0], g("anchors_cell_default"))
    np.testing.assert_array_equal(default((64, 80), [(4, 5)]), g("anchors_default"))
    flat = det.AnchorGenerator((16, 32), (0.5, 1.0, 2.0))  # torchvision's short forms
    np.testing.assert_array_equal(flat((64, 80), [(16, 20), (8, 10)]), g("anchors_fpn"))


def test_anchor_generator_bad_levels():
    with pytest.raises(InputError, match="one aspect-ratio tuple per level"):
        det.AnchorGenerator(((16,), (32,)), ((1.0,), (1.0,), (2.0,)))
    with pytest.raises(InputError, match="1 level"):
        det.AnchorGenerator()((64, 64), [(4, 4), (2, 2)])


# ---------------------------------------------------------------- matching and sampling


@pytest.mark.parametrize("name, args", [("rpn", (0.7, 0.3, True)), ("roi", (0.5, 0.5, False))])
def test_matcher_matches_torchvision(name, args):
    m = det.Matcher(*args)
    np.testing.assert_array_equal(m(g("matcher_quality")), g(f"matcher_{name}"))
    np.testing.assert_array_equal(m(g("matcher_quality_zero_gt")), g(f"matcher_{name}_zero_gt"))


def test_matcher_padding_equals_unpadded():
    q = g("matcher_quality")
    m = det.Matcher(0.7, 0.3, True)
    padded = np.concatenate([q, np.full((3, 40), 0.99, np.float32)])  # garbage padded gt rows
    padded = np.concatenate([padded, np.full((8, 6), 0.95, np.float32)], axis=1)  # padded preds
    gt_valid = np.arange(8) < 5
    pred_valid = np.arange(46) < 40
    out = jax.jit(m.__call__)(padded, gt_valid, pred_valid)
    np.testing.assert_array_equal(out[:40], g("matcher_rpn"))
    assert (np.asarray(out[40:]) == det.BETWEEN_THRESHOLDS).all()
    none = m(q, np.zeros(5, bool))
    assert (np.asarray(none) == det.BELOW_LOW_THRESHOLD).all()


def test_balanced_sampler_counts_and_membership():
    labels = np.array([1] * 30 + [0] * 50 + [-1] * 20)
    sampler = det.BalancedSampler(batch_size_per_image=32, positive_fraction=0.25)
    pos, neg = jax.jit(sampler.__call__)(labels, jax.random.key(0))
    pos, neg = np.asarray(pos), np.asarray(neg)
    assert pos.sum() == 8 and neg.sum() == 24
    assert (labels[pos] == 1).all() and (labels[neg] == 0).all()
    few = np.array([1] * 3 + [0] * 10 + [-1] * 5)
    pos, neg = sampler(few, jax.random.key(1))
    assert int(pos.sum()) == 3 and int(neg.sum()) == 10  # protects against too few
    idx, ok = sampler.indices(pos, neg)
    assert idx.shape == (32,) and int(ok.sum()) == 13
    np.testing.assert_array_equal(
        np.asarray(idx)[np.asarray(ok)], np.flatnonzero(np.asarray(pos | neg))
    )


def test_balanced_sampler_is_uniform_over_positives():
    labels = np.array([1] * 10 + [0] * 10)
    sampler = det.BalancedSampler(4, 0.5)
    draws = jax.vmap(lambda k: sampler(labels, k)[0])(jax.random.split(jax.random.key(3), 2000))
    freq = np.asarray(draws).mean(axis=0)[:10]
    np.testing.assert_allclose(freq, 0.2, atol=0.04)  # 2 of 10 positives, each w.p. 0.2
