"""`detect(model, variables, images)`: a two-stage detector on a list of images of any sizes,
equal to torchvision's `model.eval()(list_of_CHW_tensors)`.

The model's `transform` (torchvision's GeneralizedRCNNTransform, jaxcnn.detection.transform)
normalizes, resizes and zero-pads the images on the host into the batch torchvision builds
(largest height and width, rounded up to 32); the network, proposal filtering, RoI pooling and
post-processing run as one `jax.jit`-compiled function of that static-shape batch (compiled
once per padded shape); the detections are mapped back to each image's own pixels."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from jaxcnn.detection.transform import resize_boxes
from jaxcnn.errors import CheckpointError, InputError


@functools.lru_cache(maxsize=8)
def _compiled(model: Any) -> Any:
    def forward(variables, images, image_sizes):
        dets, state = model.apply(variables, images, image_sizes, mutable=["intermediates"])
        return dets, state["intermediates"]

    return jax.jit(forward)


def run_detector(model: Any, variables: Any, images: np.ndarray, image_sizes: np.ndarray
                 ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:  # fmt: skip
    """The compiled network on a prepared batch [N, H, W, 3] (normalized, padded) whose images
    fill `image_sizes` [N, 2]: (padded detections {"boxes", "scores", "labels", "valid"} in
    the resized images' pixels, intermediates {"fpn": {level: map}, "proposals": {...}})."""
    from flax.errors import FlaxError

    variables = {k: variables[k] for k in ("params", "batch_stats") if k in variables}
    try:
        dets, inter = _compiled(model)(variables, images, image_sizes)
    except FlaxError as err:  # a missing leaf or another shape: weights of another model
        raise CheckpointError(
            f"the variables do not fit this {type(model).__name__} ({err}). Build the model "
            "with the options the weights were made with (num_classes, norm, ...), e.g. "
            "jaxcnn.loading.load_weights(name, weights).model()."
        ) from None
    return jax.tree.map(np.asarray, dets), inter


def detect(
    model: Any, variables: Any, images: Sequence, *, score_threshold: float | None = None
) -> list[dict[str, np.ndarray]]:
    """Per image {"boxes" [n, 4] (x1, y1, x2, y2 in that image's pixels), "scores" [n],
    "labels" [n] (1-based, 0 is the background)} by decreasing score, for a list of HWC float
    images in [0, 1] (torchvision's eval-mode output). `score_threshold` drops detections
    below it (the model's box_score_thresh applies first)."""
    transform = getattr(model, "transform", None)
    if transform is None:
        raise InputError(
            f"detect needs a detection model (e.g. jaxcnn.create_model('fasterrcnn_resnet50_fpn'"
            f")); got {type(model).__name__}, which has no image transform."
        )
    if isinstance(images, np.ndarray) and images.ndim == 3:
        images = [images]
    batch, sizes, originals = transform(images)
    dets, _ = run_detector(model, variables, batch, sizes)
    return unpack(dets, sizes, originals, score_threshold)


def unpack(dets: dict[str, np.ndarray], sizes: np.ndarray, originals: np.ndarray,
           score_threshold: float | None = None) -> list[dict[str, np.ndarray]]:  # fmt: skip
    """Padded detections of a batch -> per image dicts with boxes mapped from the resized
    image (`sizes`) back to the original (`originals`), as torchvision's `postprocess`."""
    out = []
    for i in range(len(sizes)):
        keep = dets["valid"][i]
        if score_threshold is not None:
            keep = keep & (dets["scores"][i] >= score_threshold)
        out.append({
            "boxes": resize_boxes(dets["boxes"][i][keep], sizes[i], originals[i]),
            "scores": dets["scores"][i][keep].astype(np.float32),
            "labels": dets["labels"][i][keep].astype(np.int64),
        })  # fmt: skip
    return out
