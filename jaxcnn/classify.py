"""`predict(model_name, image, weights=...)`: the top-k classes of images with any weights
the library can load (`jaxcnn.loading`): torchvision's ImageNet weights by tag, a weight
file, or a model you trained (a workdir: its best checkpoint, transform and class names)."""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from PIL import Image

from jaxcnn.data.images import load_image
from jaxcnn.errors import ConfigError
from jaxcnn.loading import LoadedWeights, default_transform, load_weights


@functools.cache
def _compiled(model_name: str, kwargs: tuple) -> Any:
    from jaxcnn.models import create_model

    model = create_model(model_name, **dict(kwargs))
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


def _resolve(model_name: str | None, weights: Any, variables: Mapping | None) -> LoadedWeights:
    if variables is None:
        return load_weights(model_name, weights)
    if model_name is None:
        raise ConfigError("predict(..., variables=...) needs the model name.")
    from jaxcnn.pretrained import imagenet_categories
    from jaxcnn.pretrained.torchvision import RULES

    kwargs = dict(RULES[model_name].model_kwargs) if model_name in RULES else {}
    n = _num_classes(model_name, variables)
    names = imagenet_categories() if n == 1000 else ()
    return LoadedWeights(model_name, dict(variables), kwargs, default_transform(model_name),
                         names, "variables passed", "")


def _num_classes(model_name: str, variables: Mapping) -> int | None:
    from jaxcnn.models import create_model

    head = getattr(create_model(model_name), "head_name", None)
    kernel = variables.get("params", {}).get(head, {}).get("kernel") if head else None
    return None if kernel is None else int(np.shape(kernel)[-1])


def predict(
    model_name: str | None,
    image: Any,
    variables: Mapping | None = None,
    weights: str | os.PathLike = "DEFAULT",
    *,
    top_k: int = 5,
) -> list[tuple[str, float]] | list[list[tuple[str, float]]]:
    """Top-`top_k` (class name, probability) for an image (a file path, PIL image or HWC
    array) or a list of them, transformed as the weights expect. `weights`: a registry tag
    ("DEFAULT", "IMAGENET1K_V1"), a weight file or directory, or a training workdir
    (`model_name` may then be None); or pass `variables` directly."""
    loaded = _resolve(model_name, weights, variables)
    images, single = _as_images(image)
    batch = loaded.transform.batch(images)
    kwargs = tuple(sorted((k, v) for k, v in loaded.model_kwargs.items()
                          if isinstance(v, int | float | str | bool | tuple)))
    probs = np.asarray(_compiled(loaded.model_name, kwargs)(loaded.variables, batch))
    labels = loaded.class_names or tuple(str(i) for i in range(probs.shape[-1]))
    top = np.argsort(-probs, axis=-1, kind="stable")[:, :top_k]
    results = [[(labels[i], float(p[i])) for i in row] for p, row in zip(probs, top, strict=True)]
    return results[0] if single else results
