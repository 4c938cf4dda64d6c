"""`predict(model_name, image)`: ImageNet top-5 labels and probabilities."""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image

from jaxcnn.data.images import load_image
from jaxcnn.pretrained.weights import get_weights, imagenet_categories


@functools.cache
def _compiled(model_name: str):
    import jax

    from jaxcnn.pretrained.torchvision import pretrained_model

    model = pretrained_model(model_name)
    return jax.jit(lambda variables, x: jax.nn.softmax(model.apply(variables, x), axis=-1))


def _as_images(image: Any) -> tuple[list[Any], bool]:
    """(list of images, whether one image was given): paths, PIL images, HWC arrays, or a
    list / NHWC array of them."""
    if isinstance(image, (str, os.PathLike)):
        return [load_image(image)], True  # DatasetError naming an unreadable file
    if isinstance(image, Image.Image):
        return [image], True
    if isinstance(image, np.ndarray) and image.ndim == 4:
        return list(image), False
    if isinstance(image, Sequence) and not isinstance(image, np.ndarray):
        return [_as_images(im)[0][0] for im in image], False
    return [image], True


def predict(
    model_name: str,
    image: Any,
    variables: Mapping | None = None,
    weights: str = "IMAGENET1K_V1",
    *,
    path: str | os.PathLike | None = None,
    top_k: int = 5,
) -> list[tuple[str, float]] | list[list[tuple[str, float]]]:
    """Top-`top_k` (ImageNet label, probability) for an image (a file path, PIL image or HWC
    array) or a list of them, preprocessed with the weights' own transform. `variables`
    defaults to `jaxcnn.pretrained.load(model_name, weights, path)`."""
    from jaxcnn.pretrained.hub import load

    entry = get_weights(model_name, weights)
    if variables is None:
        variables = load(model_name, weights, path=path)
    images, single = _as_images(image)
    batch = entry.transforms().batch(images)
    probs = np.asarray(_compiled(model_name)(variables, batch))
    labels = imagenet_categories()
    top = np.argsort(-probs, axis=-1, kind="stable")[:, :top_k]
    results = [[(labels[i], float(p[i])) for i in row] for p, row in zip(probs, top, strict=True)]
    return results[0] if single else results
