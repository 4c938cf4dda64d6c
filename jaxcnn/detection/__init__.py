"""Object detection toolkit with torchvision's semantics, jittable: box operations, NMS,
RoI pooling / RoI Align, anchors, box coding, matching and sampling, and the COCO and VOC
metrics (see the README section "Detection").

Boxes are (x1, y1, x2, y2) in pixels; feature maps are NHWC.
"""

from jaxcnn.detection.anchors import AnchorGenerator
from jaxcnn.detection.boxes import (
    box_area,
    box_convert,
    box_iou,
    check_boxes,
    clip_boxes_to_image,
    generalized_box_iou,
    min_size_mask,
    remove_small_boxes,
)
from jaxcnn.detection.coco_eval import STAT_NAMES, coco_evaluate
from jaxcnn.detection.coder import BBOX_XFORM_CLIP, decode_boxes, encode_boxes
from jaxcnn.detection.detect import detect, run_detector
from jaxcnn.detection.eval_inputs import to_coco, unpad
from jaxcnn.detection.matching import (
    BELOW_LOW_THRESHOLD,
    BETWEEN_THRESHOLDS,
    BalancedSampler,
    Matcher,
)
from jaxcnn.detection.nms import batched_nms, batched_nms_padded, nms, nms_padded
from jaxcnn.detection.poolers import multiscale_roi_align
from jaxcnn.detection.roi import roi_align, roi_pool
from jaxcnn.detection.transform import RCNNTransform, resize_boxes
from jaxcnn.detection.voc_eval import average_precision, precision_recall, voc_evaluate

__all__ = [
    "BBOX_XFORM_CLIP",
    "BELOW_LOW_THRESHOLD",
    "BETWEEN_THRESHOLDS",
    "STAT_NAMES",
    "AnchorGenerator",
    "BalancedSampler",
    "RCNNTransform",
    "Matcher",
    "average_precision",
    "batched_nms",
    "batched_nms_padded",
    "box_area",
    "box_convert",
    "box_iou",
    "check_boxes",
    "clip_boxes_to_image",
    "coco_evaluate",
    "decode_boxes",
    "detect",
    "encode_boxes",
    "generalized_box_iou",
    "min_size_mask",
    "multiscale_roi_align",
    "nms",
    "nms_padded",
    "precision_recall",
    "remove_small_boxes",
    "roi_align",
    "resize_boxes",
    "roi_pool",
    "run_detector",
    "to_coco",
    "unpad",
    "voc_evaluate",
]
