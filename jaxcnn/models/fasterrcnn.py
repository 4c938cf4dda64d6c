"""Faster R-CNN (Ren, He, Girshick & Sun, 2015, "Faster R-CNN: Towards Real-Time Object Detection
with Region Proposal Networks") with a ResNet-FPN backbone (Lin et al., 2017, "Feature Pyramid
Networks for Object Detection"), as torchvision's `fasterrcnn_resnet50_fpn`
(torchvision/models/detection/faster_rcnn.py, generalized_rcnn.py, rpn.py, roi_heads.py,
backbone_utils.py, ops/feature_pyramid_network.py): same keyword names and defaults, same
module tree (so torchvision's COCO weights convert key by key), same numbers.

- backbone: jaxcnn's ResNet with `FrozenBatchNorm2d` (norm="frozen"; "batch" trains BatchNorm as
  torchvision does without pretrained weights) and `trainable_backbone_layers` (gradients stop
  below the trainable layers); an FPN (1x1 lateral + 3x3 output convs, nearest top-down
  upsampling) on C2..C5 plus the max-pool level P6;
- rpn: a 3x3 conv + ReLU and 1x1 objectness / box-delta convs per level, 3 anchors per cell
  (sizes 32..512 by level, ratios 0.5, 1, 2), proposals filtered as torchvision
  (jaxcnn.detection.rpn);
- roi_heads: `MultiScaleRoIAlign` of P2..P5 (7x7, sampling ratio 2, `LevelMapper`), the
  two-layer MLP head (1024) and the `FastRCNNPredictor` (class scores, per-class deltas),
  post-processed as torchvision (jaxcnn.detection.roi_heads).

The module takes a normalized, zero-padded NHWC batch and the (height, width) each image fills
(`jaxcnn.detection.RCNNTransform` makes both from a list of images; `jaxcnn.detection.detect`
does the whole round trip). Everything runs under `jax.jit` with static shapes: proposals and
detections come out padded with validity masks. In training (`train=True` with targets) the
output is torchvision's four losses; the samplers draw from the "dropout" rng stream (the
per-step key every jaxcnn train step passes).
"""

from __future__ import annotations

from functools import partial
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn.detection.anchors import AnchorGenerator
from jaxcnn.detection.coder import decode_boxes
from jaxcnn.detection.matching import BalancedSampler, Matcher
from jaxcnn.detection.poolers import infer_scales, multiscale_roi_align
from jaxcnn.detection.roi_heads import fastrcnn_loss, postprocess_detections, sample_proposals
from jaxcnn.detection.rpn import (
    anchor_targets,
    filter_proposals,
    flatten_head_outputs,
    rpn_loss,
    sample_anchors,
)
from jaxcnn.detection.transform import RCNNTransform
from jaxcnn.errors import ConfigError, InputError
from jaxcnn.models.layers import Dtype, ModuleDef, check_input, max_pool
from jaxcnn.models.registry import register_model
from jaxcnn.models.resnet import BasicBlock, Bottleneck, ResNet

SAMPLING_RNG = "dropout"
"""The rng stream the RPN and RoI samplers draw from during training."""

# torchvision's inits: FPN convs kaiming_uniform_(a=1), RPN convs normal(std=0.01), Linear
# layers PyTorch's default U(+-1/sqrt(fan_in)) for weights and biases.
_fpn_init = nn.initializers.variance_scaling(1.0, "fan_in", "uniform")
_rpn_init = nn.initializers.normal(0.01)
_linear_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def _torch_linear_bias(fan_in: int):
    bound = 1.0 / np.sqrt(fan_in)
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype,
                                                                    -bound, bound)  # fmt: skip


def _nearest_resize(x: jax.Array, size: tuple[int, int]) -> jax.Array:
    """`F.interpolate(x, size, mode="nearest")` on NHWC: source index floor(i * in / out)."""
    rows = np.minimum((np.arange(size[0]) * (x.shape[1] / size[0])).astype(np.int64),
                      x.shape[1] - 1)  # fmt: skip
    cols = np.minimum((np.arange(size[1]) * (x.shape[2] / size[1])).astype(np.int64),
                      x.shape[2] - 1)  # fmt: skip
    return x[:, rows][:, :, cols]


class FeaturePyramidNetwork(nn.Module):
    """torchvision's `FeaturePyramidNetwork` with `LastLevelMaxPool`: laterals
    `inner_blocks_i` (1x1), outputs `layer_blocks_i` (3x3), top-down nearest upsampling, and
    P6 = P5[::2, ::2] (a 1x1 max-pool of stride 2). Returns the levels finest first."""

    out_channels: int = 256
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, feats: list[jax.Array]) -> list[jax.Array]:
        conv = partial(nn.Conv, self.out_channels, kernel_init=_fpn_init, dtype=self.dtype,
                       param_dtype=self.param_dtype)  # fmt: skip
        n = len(feats)
        last_inner = conv((1, 1), name=f"inner_blocks_{n - 1}")(feats[-1])
        results = [conv((3, 3), padding=1, name=f"layer_blocks_{n - 1}")(last_inner)]
        for idx in range(n - 2, -1, -1):
            lateral = conv((1, 1), name=f"inner_blocks_{idx}")(feats[idx])
            last_inner = lateral + _nearest_resize(last_inner, lateral.shape[1:3])
            results.insert(0, conv((3, 3), padding=1, name=f"layer_blocks_{idx}")(last_inner))
        results.append(max_pool(results[-1], 1, 2))
        return results


class BackboneWithFPN(nn.Module):
    """`body` (a ResNet, its stages 1-4 as C2..C5) + `fpn` (torchvision's BackboneWithFPN)."""

    body: ResNet
    out_channels: int = 256

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> list[jax.Array]:
        feats = self.body.features(x, train=train)
        stages = [feats[f"stage{i}"] for i in range(1, len(self.body.stage_sizes) + 1)]
        return FeaturePyramidNetwork(self.out_channels, self.body.dtype, self.body.param_dtype,
                                     name="fpn")(stages)  # fmt: skip


class RPNHead(nn.Module):
    """torchvision's `RPNHead`: shared 3x3 conv + ReLU, then 1x1 `cls_logits` (A per cell) and
    `bbox_pred` (4A per cell), applied to every level."""

    num_anchors: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, feats: list[jax.Array]) -> tuple[list[jax.Array], list[jax.Array]]:
        c = feats[0].shape[-1]
        conv = partial(nn.Conv, kernel_init=_rpn_init, dtype=self.dtype,
                       param_dtype=self.param_dtype)  # fmt: skip
        shared = conv(c, (3, 3), padding=1, name="conv")
        cls = conv(self.num_anchors, (1, 1), name="cls_logits")
        box = conv(4 * self.num_anchors, (1, 1), name="bbox_pred")
        logits, deltas = [], []
        for f in feats:
            t = nn.relu(shared(f))
            logits.append(cls(t).astype(jnp.float32))
            deltas.append(box(t).astype(jnp.float32))
        return logits, deltas


class TwoMLPHead(nn.Module):
    """torchvision's `TwoMLPHead`: flatten the pooled RoI (NHWC order; the converter permutes
    torch's CHW fc6 rows), fc6 + ReLU, fc7 + ReLU."""

    representation_size: int = 1024
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.reshape(x.shape[0], -1)
        for name in ("fc6", "fc7"):
            x = nn.relu(nn.Dense(self.representation_size, kernel_init=_linear_init,
                                 bias_init=_torch_linear_bias(x.shape[-1]), dtype=self.dtype,
                                 param_dtype=self.param_dtype, name=name)(x))  # fmt: skip
        return x


class FastRCNNPredictor(nn.Module):
    """torchvision's `FastRCNNPredictor`: `cls_score` (num_classes, background first) and
    `bbox_pred` (4 deltas per class)."""

    num_classes: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        dense = partial(nn.Dense, kernel_init=_linear_init, bias_init=_torch_linear_bias(
            x.shape[-1]), dtype=self.dtype, param_dtype=self.param_dtype)  # fmt: skip
        scores = dense(self.num_classes, name="cls_score")(x)
        deltas = dense(4 * self.num_classes, name="bbox_pred")(x)
        return scores.astype(jnp.float32), deltas.astype(jnp.float32)


class FasterRCNN(nn.Module):
    """Faster R-CNN on a ResNet-FPN backbone; the fields are torchvision's `FasterRCNN` and
    `fasterrcnn_resnet50_fpn` keywords (`num_classes` counts the background)."""

    stage_sizes: tuple[int, ...]
    block_cls: ModuleDef = Bottleneck
    num_classes: int = 91
    # GeneralizedRCNNTransform
    min_size: int = 800
    max_size: int = 1333
    image_mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    image_std: tuple[float, ...] = (0.229, 0.224, 0.225)
    fixed_size: tuple[int, int] | None = None  # (width, height): resize every image to it
    # backbone
    trainable_backbone_layers: int = 3
    norm: str = "frozen"
    norm_eps: float = 1e-5  # FrozenBatchNorm2d's; torchvision sets 0.0 for the COCO_V1 weights
    fpn_channels: int = 256
    # RPN
    rpn_pre_nms_top_n_train: int = 2000
    rpn_pre_nms_top_n_test: int = 1000
    rpn_post_nms_top_n_train: int = 2000
    rpn_post_nms_top_n_test: int = 1000
    rpn_nms_thresh: float = 0.7
    rpn_fg_iou_thresh: float = 0.7
    rpn_bg_iou_thresh: float = 0.3
    rpn_batch_size_per_image: int = 256
    rpn_positive_fraction: float = 0.5
    rpn_score_thresh: float = 0.0
    anchor_sizes: tuple[tuple[int, ...], ...] = ((32,), (64,), (128,), (256,), (512,))
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    # RoI heads
    box_score_thresh: float = 0.05
    box_nms_thresh: float = 0.5
    box_detections_per_img: int = 100
    box_fg_iou_thresh: float = 0.5
    box_bg_iou_thresh: float = 0.5
    box_batch_size_per_image: int = 512
    box_positive_fraction: float = 0.25
    representation_size: int = 1024
    roi_output_size: int = 7
    roi_sampling_ratio: int = 2
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    zero_options: ClassVar[tuple[str, ...]] = ("trainable_backbone_layers",)
    head_name: ClassVar[str] = "box_predictor/cls_score"  # sized by num_classes

    def __post_init__(self) -> None:
        # Options read back from JSON (run.json) are lists: keep the module hashable.
        for name in ("image_mean", "image_std", "fixed_size", "anchor_sizes", "aspect_ratios"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, _tuples(value))
        super().__post_init__()

    @property
    def transform(self) -> RCNNTransform:
        """The host-side resize / normalize / pad of this model (GeneralizedRCNNTransform)."""
        return RCNNTransform(self.min_size, self.max_size, tuple(self.image_mean),
                             tuple(self.image_std), 32, self.fixed_size)  # fmt: skip

    @property
    def anchor_generator(self) -> AnchorGenerator:
        """torchvision's `_default_anchorgen()` (or this model's sizes / ratios)."""
        return AnchorGenerator(self.anchor_sizes, (tuple(self.aspect_ratios),) * len(
            self.anchor_sizes))  # fmt: skip

    def _check(self) -> None:
        if not 0 <= self.trainable_backbone_layers <= 5:
            raise ConfigError(
                f"trainable_backbone_layers must be in 0..5 (5: all backbone layers train); "
                f"got {self.trainable_backbone_layers}."
            )
        if self.num_classes < 2:
            raise ConfigError(
                f"num_classes counts the background: at least 2 (background + 1 class); got "
                f"{self.num_classes}."
            )

    def frozen_params(self, params: dict) -> dict:
        """True for the parameters torchvision freezes (`_resnet_fpn_extractor`: only the
        last `trainable_backbone_layers` of layer4, layer3, layer2, layer1, conv1 train, and
        bn1 with all 5); the optimizer leaves them fixed, the forward stops their gradients."""
        train = ["layer4", "layer3", "layer2", "layer1", "conv1"][: self.trainable_backbone_layers]
        if self.trainable_backbone_layers == 5:
            train.append("bn1")

        def mark(path: tuple, _: Any) -> bool:
            keys = [str(getattr(p, "key", p)) for p in path]
            return keys[:2] == ["backbone", "body"] and not any(
                keys[2].startswith(t) for t in train)

        return jax.tree_util.tree_map_with_path(mark, params)

    def setup(self) -> None:
        self._check()
        body = ResNet(stage_sizes=self.stage_sizes, block_cls=self.block_cls, num_classes=0,
                      norm=self.norm, norm_eps=self.norm_eps,
                      frozen_stages=5 - self.trainable_backbone_layers, dtype=self.dtype,
                      param_dtype=self.param_dtype, parent=None)  # fmt: skip
        self.backbone = BackboneWithFPN(body, self.fpn_channels)
        self.rpn_head = RPNHead(self.anchor_generator.num_anchors_per_location()[0],
                                self.dtype, self.param_dtype)  # fmt: skip
        self.box_head = TwoMLPHead(self.representation_size, self.dtype, self.param_dtype)
        self.box_predictor = FastRCNNPredictor(self.num_classes, self.dtype, self.param_dtype)

    def features(self, images: jax.Array, train: bool = False) -> dict[str, jax.Array]:
        """The FPN maps {"0", "1", "2", "3", "pool"} of a normalized NHWC batch."""
        check_input(images, model="FasterRCNN", channels=3, min_size=32)
        levels = self.backbone(images, train=train)
        names = [str(i) for i in range(len(levels) - 1)] + ["pool"]
        return dict(zip(names, levels, strict=True))

    def _rpn(self, feats: list[jax.Array], images: jax.Array, image_sizes: jax.Array,
             train: bool):  # fmt: skip
        logits, deltas = self.rpn_head(feats)
        level_sizes = [int(np.prod(o.shape[1:])) for o in logits]
        objectness, deltas = flatten_head_outputs(logits, deltas)
        anchors = jnp.asarray(self.anchor_generator(images.shape[1:3],
                                                    [f.shape[1:3] for f in feats]))  # fmt: skip
        proposals = decode_boxes(jax.lax.stop_gradient(deltas),
                                 jnp.broadcast_to(anchors, deltas.shape))
        top_n = (self.rpn_pre_nms_top_n_train, self.rpn_post_nms_top_n_train) if train else (
            self.rpn_pre_nms_top_n_test, self.rpn_post_nms_top_n_test)  # fmt: skip
        boxes, scores, valid = filter_proposals(
            proposals, objectness, level_sizes, image_sizes, pre_nms_top_n=top_n[0],
            post_nms_top_n=top_n[1], nms_thresh=self.rpn_nms_thresh,
            score_thresh=self.rpn_score_thresh,
        )  # fmt: skip
        return boxes, scores, valid, (objectness, deltas, anchors)

    def _box_features(self, feats: list[jax.Array], boxes: jax.Array, image_sizes_max) -> Any:
        pooled = feats[:4]
        scales = infer_scales([f.shape[1:3] for f in pooled], image_sizes_max)
        roi = multiscale_roi_align(pooled, boxes, self.roi_output_size, scales,
                                   self.roi_sampling_ratio)  # fmt: skip
        n, p = boxes.shape[:2]
        x = self.box_head(roi.reshape(n * p, *roi.shape[2:]))
        logits, deltas = self.box_predictor(x)
        return logits.reshape(n, p, -1), deltas.reshape(n, p, -1)

    def _image_sizes(self, images: jax.Array, image_sizes) -> jax.Array:
        if image_sizes is None:
            return jnp.broadcast_to(jnp.asarray(images.shape[1:3], jnp.int32),
                                    (images.shape[0], 2))  # fmt: skip
        sizes = jnp.asarray(image_sizes)
        if sizes.shape != (images.shape[0], 2):
            raise InputError(
                f"image_sizes must be [N, 2] (height, width) for the {images.shape[0]} images; "
                f"got shape {sizes.shape}."
            )
        return sizes.astype(jnp.int32)

    def propose(self, images: jax.Array, image_sizes: jax.Array | None = None) -> dict:
        """RPN proposals in evaluation mode: {"boxes" [N, P, 4], "scores", "valid" [N, P]}."""
        feats = list(self.features(images).values())
        sizes = self._image_sizes(images, image_sizes)
        boxes, scores, valid, _ = self._rpn(feats, images, sizes, train=False)
        return {"boxes": boxes, "scores": scores, "valid": valid}

    def __call__(
        self,
        images: jax.Array,
        image_sizes: jax.Array | None = None,
        targets: dict[str, jax.Array] | None = None,
        train: bool = False,
        samples: dict[str, Any] | None = None,
    ) -> dict[str, jax.Array]:
        """Evaluation: detections {"boxes" [N, D, 4] (pixels of the resized image), "scores",
        "labels" [N, D], "valid" [N, D]} of a normalized padded batch [N, H, W, 3] whose
        images fill `image_sizes` [N, 2] (default: all of it). Training (`train=True`):
        `targets` {"boxes" [N, K, 4], "labels" [N, K] (>= 1), "mask" [N, K]} -> torchvision's
        losses {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"};
        `samples` may fix the samplers' draws and the proposals (`sample_losses`). The FPN
        maps and the proposals are sown into the "intermediates" collection."""
        fpn = self.features(images, train=train)
        feats = list(fpn.values())
        sizes = self._image_sizes(images, image_sizes)
        if train and targets is None:
            raise InputError("FasterRCNN(train=True) needs targets (boxes, labels, mask).")
        boxes, scores, valid, rpn_out = self._rpn(feats, images, sizes, train)
        if samples and "proposals" in samples:
            boxes, valid = samples["proposals"]
        self.sow("intermediates", "fpn", fpn)
        self.sow("intermediates", "proposals", {"boxes": boxes, "scores": scores, "valid": valid})
        # The level scales assume the largest image fills the padded batch to within 2^0.5
        # (it does: padding adds less than size_divisible pixels to images >= min_size).
        if not train:
            logits, deltas = self._box_features(feats, boxes, images.shape[1:3])
            return postprocess_detections(
                logits, deltas, boxes, valid, sizes, score_thresh=self.box_score_thresh,
                nms_thresh=self.box_nms_thresh, detections_per_img=self.box_detections_per_img,
            )  # fmt: skip
        return self.sample_losses(feats, images, boxes, valid, rpn_out, targets, samples or {})

    def sample_losses(self, feats, images, proposals, valid, rpn_out, targets, samples) -> dict:
        """The four training losses (torchvision's names); `samples` may hold "rpn"
        (positive, negative) anchor masks [N, T], "proposals" (boxes [N, P, 4], mask [N, P])
        and "roi" (positive, negative) masks [N, P + K] to reproduce a draw; what it lacks is
        computed, the draws from the SAMPLING_RNG stream."""
        gt_boxes = jnp.asarray(targets["boxes"], jnp.float32)
        gt_labels = jnp.asarray(targets["labels"], jnp.int32)
        gt_valid = jnp.asarray(targets["mask"], bool)
        objectness, deltas, anchors = rpn_out
        anchor_matcher = Matcher(self.rpn_fg_iou_thresh, self.rpn_bg_iou_thresh, True)
        labels, reg = jax.vmap(lambda b, m: anchor_targets(anchors, b, m, anchor_matcher))(
            gt_boxes, gt_valid)  # fmt: skip
        anchor_sampler = BalancedSampler(self.rpn_batch_size_per_image, self.rpn_positive_fraction)
        if "rpn" in samples:
            pos, neg = samples["rpn"]
        else:
            pos, neg = sample_anchors(labels, self.make_rng(SAMPLING_RNG), anchor_sampler)
        loss_objectness, loss_rpn_box = rpn_loss(objectness, deltas, labels, reg, pos, neg)

        roi_matcher = Matcher(self.box_fg_iou_thresh, self.box_bg_iou_thresh, False)
        roi_sampler = BalancedSampler(self.box_batch_size_per_image, self.box_positive_fraction)
        if "roi" in samples:
            keys, fixed = None, samples["roi"]
        else:
            keys = jax.random.split(self.make_rng(SAMPLING_RNG), images.shape[0])
            fixed = None
        rois = jax.vmap(
            lambda p, v, b, lab, m, k, f: sample_proposals(p, v, b, lab, m, roi_matcher,
                                                           roi_sampler, k, f),
            in_axes=(0, 0, 0, 0, 0, None if keys is None else 0, None if fixed is None else 0),
        )(proposals, valid, gt_boxes, gt_labels, gt_valid, keys, fixed)  # fmt: skip
        logits, box_deltas = self._box_features(feats, rois["boxes"], images.shape[1:3])
        flat = lambda x: x.reshape(-1, *x.shape[2:])  # noqa: E731
        loss_classifier, loss_box = fastrcnn_loss(
            flat(logits), flat(box_deltas), flat(rois["labels"]), flat(rois["targets"]),
            flat(rois["valid"]))  # fmt: skip
        return {
            "loss_classifier": loss_classifier,
            "loss_box_reg": loss_box,
            "loss_objectness": loss_objectness,
            "loss_rpn_box_reg": loss_rpn_box,
        }


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list | tuple) else value


def _fasterrcnn(stage_sizes: tuple[int, ...], block_cls: ModuleDef, **kwargs) -> FasterRCNN:
    return FasterRCNN(stage_sizes=stage_sizes, block_cls=block_cls, **kwargs)


_register = partial(register_model, family="fasterrcnn", task="detection",
                    input_shape=(224, 224, 3), min_input_size=32, num_classes=91)  # fmt: skip


@_register()
def fasterrcnn_resnet50_fpn(**kwargs) -> FasterRCNN:
    """Faster R-CNN ResNet-50-FPN: 41,755,286 parameters (torchvision's, BatchNorm frozen)."""
    return _fasterrcnn((3, 4, 6, 3), Bottleneck, **kwargs)


@_register()
def fasterrcnn_resnet18_fpn(**kwargs) -> FasterRCNN:
    """Faster R-CNN ResNet-18-FPN (torchvision's `resnet_fpn_backbone("resnet18")` in
    `FasterRCNN`): the small variant for CPU runs."""
    return _fasterrcnn((2, 2, 2, 2), BasicBlock, **kwargs)
