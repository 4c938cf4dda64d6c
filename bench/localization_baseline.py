"""The trivial baseline of single-object localization on a VOC-format set: predict, for every
test image, the mean (x1, y1, x2, y2) of the training images' largest boxes (in the resized
frame). A localizer has learned something only where it beats these figures.

    python bench/localization_baseline.py --path data/raccoon --image-size 128

Prints one JSON line: mean IoU and accuracy at IoU >= 0.5 on the test split.
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def largest_boxes(arrays: dict) -> np.ndarray:
    """Each image's largest real box [N, 4] (images without a box are dropped)."""
    boxes, mask = arrays["boxes"], arrays["box_mask"]
    area = np.where(mask, (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1]), -1)
    keep = mask.any(axis=1)
    return boxes[np.arange(len(boxes)), area.argmax(axis=1)][keep]


def main() -> None:
    from jaxcnn.data import load_voc
    from jaxcnn.detection import box_iou

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--path", default="data/raccoon")
    p.add_argument("--image-size", type=int, default=128)
    args = p.parse_args()
    splits = load_voc(args.path, image_size=args.image_size)
    train, test = largest_boxes(splits.train.arrays), largest_boxes(splits.test.arrays)
    guess = np.repeat(train.mean(axis=0, keepdims=True), len(test), axis=0)
    iou = np.asarray(box_iou(guess[:, None], test[:, None]))[:, 0, 0]
    print(json.dumps({"baseline": "mean training box", "test_images": len(test),
                      "test_mean_iou": round(float(iou.mean()), 4),
                      "test_iou50_accuracy": round(float((iou >= 0.5).mean()), 4)}))  # fmt: skip


if __name__ == "__main__":
    main()
