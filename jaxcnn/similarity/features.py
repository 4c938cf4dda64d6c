"""Embeddings of images for similarity search: any registered model, any stage of its
`features` dict, with the preprocessing that matches its weights, compiled once per batch
shape and spread over all devices. `PixelExtractor` is the raw-pixel baseline."""

from __future__ import annotations

import dataclasses
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxcnn.data.images import (
    ImageLike,
    _array_to_rgb,
    as_image_list,
    load_image,
    resize,
)
from jaxcnn.errors import ConfigError, InputError
from jaxcnn.models import create_model, get_model_spec
from jaxcnn.pretrained.transforms import IMAGENET_MEAN as _MEAN01
from jaxcnn.pretrained.transforms import IMAGENET_STD as _STD01

log = logging.getLogger(__name__)

IMAGENET_MEAN = tuple(255.0 * m for m in _MEAN01)
IMAGENET_STD = tuple(255.0 * s for s in _STD01)


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """How raw images become model inputs: an optional resize of the shorter side followed by
    a centre crop (torchvision's eval transform), or a plain resize to `size`; then channels
    (RGB, or luma for 1-channel models) and (x - mean) / std on the [0, 255] scale."""

    size: tuple[int, int]
    channels: int = 3
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (255.0,)
    resize_shorter: int = 0  # 0: resize straight to `size`

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """uint8 RGB [H, W, 3] -> float32 [size[0], size[1], channels], normalized."""
        # Any HWC image (gray, RGBA, float, bool) becomes uint8 RGB, or raises InputError.
        image = _array_to_rgb(image, "Preprocessing")
        if self.resize_shorter and self.channels == 3 and self.size[0] == self.size[1]:
            from jaxcnn.pretrained.transforms import ImageClassification

            # torchvision's exact eval transform (resize rounding, crop offsets, antialias).
            transform = ImageClassification(
                self.resize_shorter, self.size[0], tuple(m / 255.0 for m in self._mean()),
                tuple(s / 255.0 for s in self._std()))
            return transform(image)
        x = resize(image, self.size).astype(np.float32)
        if self.channels == 1:
            x = x @ np.array([0.299, 0.587, 0.114], np.float32)[:, None]  # ITU-R 601 luma
        return (x - self._mean()) / self._std()

    def _mean(self) -> np.ndarray:
        return np.broadcast_to(np.asarray(self.mean, np.float32), (self.channels,))

    def _std(self) -> np.ndarray:
        return np.broadcast_to(np.asarray(self.std, np.float32), (self.channels,))

    def normalize(self, images: np.ndarray) -> np.ndarray:
        """(x - mean) / std of a uint8 batch [N, H, W, C] already at `size` and `channels`
        (e.g. a training dataset's arrays)."""
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[1:] != (*self.size, self.channels):
            raise InputError(
                f"normalize expects [N, {self.size[0]}, {self.size[1]}, {self.channels}] images; "
                f"got {images.shape}. Use the Preprocessing object on single images instead."
            )
        return (images.astype(np.float32) - self._mean()) / self._std()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (stored in search indexes)."""
        return dataclasses.asdict(self)


def default_preprocessing(model_name: str) -> Preprocessing:
    """The transform of the model's torchvision weights when it has some
    (jaxcnn.pretrained), else: ImageNet's eval transform (shorter side to 256/224 of the crop,
    centre crop, ImageNet mean/std) for models whose canonical input is at least 64 pixels,
    and a plain resize with [0, 1] scaling for small-input models (LeNet, CIFAR stems), as
    jaxcnn's default training config does."""
    from jaxcnn.similarity.weights import pretrained_preprocessing

    registered = pretrained_preprocessing(model_name)
    if registered is not None:
        return registered
    spec = get_model_spec(model_name)
    h, w, c = spec.input_shape
    if min(h, w) >= 64:
        mean, std = (IMAGENET_MEAN, IMAGENET_STD) if c == 3 else ((0.0,), (255.0,))
        return Preprocessing((h, w), c, mean, std, resize_shorter=round(h * 256 / 224))
    return Preprocessing((h, w), c)


def weights_id(weights: str | os.PathLike | None) -> str:
    """How weights are recorded in indexes: absolute for files and workdirs (so a search
    from another directory finds them), verbatim for pretrained names."""
    if weights is None:
        return ""
    path = Path(weights).expanduser()
    return str(path.resolve()) if path.exists() else str(weights)


def _loud_random_warning(model_name: str) -> None:
    msg = (
        f"FeatureExtractor({model_name!r}) has NO trained weights: its embeddings come from "
        "RANDOM initial parameters and say little about image content. Pass variables= "
        "(jaxcnn.pretrained.load(...)) or weights= a training workdir for meaningful features."
    )
    warnings.warn(msg, UserWarning, stacklevel=3)
    log.warning(msg)


def _random_variables(model: Any, in_shape: tuple[int, int, int], seed: int) -> dict:
    """The model's own initializers, drawn with the "rbg" generator: on CPU, XLA compiles
    threefry-based initialization about 5x slower, and random features need no particular
    stream (they are deterministic given `seed` either way)."""
    rngs = {"params": jax.random.key(seed, impl="rbg"),
            "dropout": jax.random.key(seed + 1, impl="rbg")}
    x = jnp.zeros((1, *in_shape), jnp.float32)
    return dict(jax.jit(lambda r, x: model.init(r, x, train=False))(rngs, x))


def _stages_fn(model: Any) -> Any:
    """`(variables, x) -> {stage: array}`: a classifier's `features` dict, or for embedding
    models without one (the siamese wrapper) {"embedding": model(x)}."""
    if callable(getattr(model, "features", None)):
        return lambda v, x: model.apply(v, x, train=False, method=model.features)
    return lambda v, x: {"embedding": model.apply(v, x, train=False)}


def output_layer(model_name: str) -> str:
    """The stage holding what `model(x)` returns: "logits" for classifiers (an embedding
    head when trained with the siamese task), "embedding" for embedding-only models."""
    return "logits" if callable(getattr(create_model(model_name), "features", None)) else (
        "embedding")


def _flatten_features(x: jax.Array) -> jax.Array:
    x = x.astype(jnp.float32)
    return x.reshape((x.shape[0], -1))


class FeatureExtractor:
    """Embeddings [N, F] (float32) of images from one stage (`layer`) of a registered model.

    `variables` are the model's variables (e.g. from `jaxcnn.pretrained.load`); `weights` names
    where they came from (a pretrained tag, a checkpoint path or a training workdir, which is
    loaded when `variables` is None). With neither, the model is randomly initialized and a
    loud warning is issued. `layer` is any key of the model's `features` dict ("pre_logits",
    "logits", stage names); spatial feature maps are flattened. Images are preprocessed on
    the host (see `Preprocessing`), batched `batch_size` at a time (the last batch padded, so
    one compiled program serves every batch) and sharded over `devices` (default all).
    """

    def __init__(
        self,
        model_name: str,
        variables: Any = None,
        layer: str = "pre_logits",
        *,
        weights: str | os.PathLike | None = None,
        num_classes: int | None = None,
        preprocessing: Preprocessing | None = None,
        batch_size: int = 64,
        dtype: Any = None,
        seed: int = 0,
        devices: Sequence[Any] | None = None,
        model_kwargs: dict[str, Any] | None = None,
    ):
        self.model_name = model_name
        self.layer = layer
        self.weights = weights_id(weights)
        self.source = self.weights  # with the checkpoint step, for reports
        model_kwargs = dict(model_kwargs or {})
        if dtype is not None:
            model_kwargs["dtype"] = dtype
        if variables is None and weights is not None:
            from jaxcnn.similarity.weights import load_weights

            loaded = load_weights(model_name, weights)
            self.source = loaded.source
            variables = loaded.variables
            num_classes = loaded.num_classes if num_classes is None else num_classes
            preprocessing = preprocessing or loaded.preprocessing
            model_kwargs = {**loaded.model_kwargs, **model_kwargs}
        self.model = create_model(model_name, num_classes=num_classes, **model_kwargs)
        self.preprocessing = preprocessing or default_preprocessing(model_name)
        h, w = self.preprocessing.size
        in_shape = (h, w, self.preprocessing.channels)
        if variables is None:
            _loud_random_warning(model_name)
            self.weights = self.source = f"random(seed={seed})"
            variables = _random_variables(self.model, in_shape, seed)
        self.mesh = Mesh(np.array(list(devices or jax.devices())), ("data",))
        ndev = self.mesh.devices.size
        self.batch_size = max(ndev, -(-batch_size // ndev) * ndev)
        replicated = NamedSharding(self.mesh, P())
        self.variables = jax.device_put(variables, replicated)
        self._batch_sharding = NamedSharding(self.mesh, P("data"))
        stages = _stages_fn(self.model)

        def embed(variables: Any, x: jax.Array) -> jax.Array:
            return _flatten_features(stages(variables, x)[layer])

        self._embed = jax.jit(
            embed, in_shardings=(replicated, self._batch_sharding), out_shardings=replicated
        )
        # Check the layer name (and the variables' shapes) now, without computing anything.
        probe = jax.ShapeDtypeStruct((self.batch_size, *in_shape), jnp.float32)
        try:
            feats = jax.eval_shape(stages, self.variables, probe)
        except Exception as err:
            raise ConfigError(
                f"the variables given do not fit {model_name} with input {in_shape}: "
                f"{type(err).__name__}: {str(err)[:400]}. Check model_name, num_classes and "
                "that the weights belong to this architecture."
            ) from err
        if layer not in feats:
            raise ConfigError(
                f"{model_name} has no feature stage {layer!r}; choose one of {sorted(feats)}."
            )
        self.dim = int(np.prod(feats[layer].shape[1:]))

    def describe(self) -> dict[str, Any]:
        """What produced these embeddings (stored in indexes; searches compare it)."""
        return {
            "model": self.model_name,
            "weights": self.weights,
            "layer": self.layer,
            "dim": self.dim,
            "preprocessing": self.preprocessing.to_dict(),
        }

    def preprocess(self, images: Sequence[ImageLike] | ImageLike) -> np.ndarray:
        """Model inputs float32 [N, H, W, C] for images of any size and kind."""
        return np.stack([self.preprocessing(load_image(im)) for im in as_image_list(images)])

    def embed_arrays(self, x: np.ndarray) -> np.ndarray:
        """Embeddings of already-preprocessed inputs [N, H, W, C], in fixed-size batches."""
        x = np.asarray(x, np.float32)
        if x.ndim != 4:
            raise InputError(f"embed_arrays needs [N, H, W, C] model inputs; got {x.shape}.")
        out = []
        for start in range(0, len(x), self.batch_size):
            chunk = x[start:start + self.batch_size]
            n = len(chunk)
            if n < self.batch_size:  # pad: same shape, same compiled program
                chunk = np.concatenate([chunk, np.zeros((self.batch_size - n, *x.shape[1:]),
                                                        np.float32)])
            out.append(np.asarray(self._embed(self.variables, chunk))[:n])
        if not out:
            return np.zeros((0, self.dim), np.float32)
        return np.concatenate(out)

    def __call__(self, images: Sequence[ImageLike] | ImageLike) -> np.ndarray:
        """Embeddings float32 [N, F] of paths, PIL images or arrays (one or a list)."""
        return self.embed_arrays(self.preprocess(images))


class PixelExtractor:
    """Raw-pixel "embeddings": images resized to `size` (H, W), RGB in [0, 1], flattened, as
    the lesson compares images "on raw pixels" before using a CNN."""

    def __init__(self, size: int | tuple[int, int] = 64):
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        if len(self.size) != 2 or not all(isinstance(s, int) and not isinstance(s, bool)
                                           and s > 0 for s in self.size):
            raise InputError(f"the raw-pixel size (--size) must be a positive number of pixels "
                             f"(or an (H, W) pair); got {size!r}.")
        self.dim = self.size[0] * self.size[1] * 3
        self.model_name, self.weights, self.layer = "pixels", "", "pixels"

    def describe(self) -> dict[str, Any]:
        """What produced these embeddings (stored in indexes)."""
        return {"model": "pixels", "weights": "", "layer": "pixels", "dim": self.dim,
                "preprocessing": {"size": list(self.size)}}

    def __call__(self, images: Sequence[ImageLike] | ImageLike) -> np.ndarray:
        """float32 [N, H*W*3] pixel vectors in [0, 1]."""
        batch = [resize(load_image(im), self.size) for im in as_image_list(images)]
        return np.stack(batch).reshape(len(batch), -1).astype(np.float32) / 255.0


def make_extractor(model: str = "pixels", weights: str | None = None, layer: str = "pre_logits",
                   *, size: int = 64, **kwargs: Any) -> FeatureExtractor | PixelExtractor:
    """`PixelExtractor(size)` for model "pixels", else `FeatureExtractor(model, ...)`."""
    if model == "pixels":
        return PixelExtractor(size)
    return FeatureExtractor(model, layer=layer, weights=weights, **kwargs)
