"""Embeddings of images: the one feature extractor of jaxcnn. Any registered model (or a
module instance), any stage of its `features` dict, with the evaluation `EvalTransform` of its
weights, compiled once per batch shape and sharded over all devices; `PixelExtractor` is the
raw-pixel baseline. Also the "fixed feature extractor" scenario of transfer learning:
`extract_embeddings` of a whole dataset, then `fit_classifiers` (linear and k-NN)."""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn.data.images import ImageLike, as_image_list, load_image, resize
from jaxcnn.data.pipeline import batch_sharding, make_mesh, replicated
from jaxcnn.data.transforms import EvalTransform
from jaxcnn.errors import ConfigError, InputError
from jaxcnn.loading import default_transform, load_weights, weights_id
from jaxcnn.models import create_model


def _loud_random_warning(model_name: str) -> None:
    msg = (
        f"FeatureExtractor({model_name!r}) has NO trained weights: its embeddings come from "
        "RANDOM initial parameters and say little about image content. Pass --weights (a "
        "registry tag such as DEFAULT, a weight file, or a training workdir) for meaningful "
        "features."
    )
    warnings.warn(msg, UserWarning, stacklevel=3)  # once: not also a log line


def _random_variables(model: Any, in_shape: tuple[int, int, int], seed: int) -> dict:
    """The model's own initializers, drawn with the "rbg" generator: on CPU, XLA compiles
    threefry-based initialization about 5x slower, and random features need no particular
    stream (they are deterministic given `seed` either way)."""
    rngs = {"params": jax.random.key(seed, impl="rbg"),
            "dropout": jax.random.key(seed + 1, impl="rbg")}
    x = jnp.zeros((1, *in_shape), jnp.float32)
    return dict(jax.jit(lambda r, x: model.init(r, x, train=False))(rngs, x))


def _stages_fn(model: Any) -> Callable[[Any, jax.Array], dict[str, jax.Array]]:
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


class FeatureExtractor:
    """Embeddings [N, F] (float32) of images from one stage (`layer`) of a model.

    `model` is a registered name or a module instance. `variables` are its variables; or
    `weights` names where they come from (a registry tag, a weight file, or a training
    workdir: see `jaxcnn.loading.load_weights`), loaded with the model options and the
    `EvalTransform` that go with them. With neither, the model is randomly initialized and a
    loud warning is issued. `layer` is any key of the model's `features` dict ("pre_logits",
    "logits", stage names); spatial feature maps are flattened. Images are transformed on
    the host, batched `batch_size` at a time (the last batch padded, so one compiled program
    serves every batch) and sharded over `devices` (default all)."""

    def __init__(
        self,
        model: str | Any,
        variables: Any = None,
        layer: str = "pre_logits",
        *,
        weights: str | os.PathLike | None = None,
        num_classes: int | None = None,
        transform: EvalTransform | None = None,
        batch_size: int = 64,
        dtype: Any = None,
        seed: int = 0,
        devices: Sequence[Any] | None = None,
        model_kwargs: dict[str, Any] | None = None,
    ):
        self.layer = layer
        self.weights = self.source = weights_id(weights)
        model_kwargs = dict(model_kwargs or {})
        if dtype is not None:
            model_kwargs["dtype"] = dtype
        if num_classes is not None:
            model_kwargs["num_classes"] = num_classes
        if isinstance(model, str):
            self.model_name = model
            if variables is None and weights is not None:
                loaded = load_weights(model, weights)
                self.source, variables = loaded.source, loaded.variables
                transform = transform or loaded.transform
                model_kwargs = {**loaded.model_kwargs, **model_kwargs}
            self.model = create_model(model, **model_kwargs)
            transform = transform or default_transform(model)
        else:
            self.model, self.model_name = model, type(model).__name__.lower()
            if transform is None:
                raise ConfigError("a FeatureExtractor of a module instance needs transform=.")
        self.transform = transform
        in_shape = (*transform.size, transform.channels)
        if variables is None:
            _loud_random_warning(self.model_name)
            self.weights = self.source = f"random(seed={seed})"
            variables = _random_variables(self.model, in_shape, seed)
        self.mesh = make_mesh(devices)
        ndev = self.mesh.devices.size
        self.batch_size = max(ndev, -(-batch_size // ndev) * ndev)
        self.variables = jax.device_put(dict(variables), replicated(self.mesh))
        stages = _stages_fn(self.model)

        def embed(variables: Any, x: jax.Array) -> jax.Array:
            y = stages(variables, x)[layer].astype(jnp.float32)
            return y.reshape((y.shape[0], -1))

        self._embed = jax.jit(embed, in_shardings=(replicated(self.mesh),
                                                   batch_sharding(self.mesh)),
                              out_shardings=replicated(self.mesh))
        # Check the layer name (and the variables' shapes) now, without computing anything.
        probe = jax.ShapeDtypeStruct((self.batch_size, *in_shape), jnp.float32)
        try:
            feats = jax.eval_shape(stages, self.variables, probe)
        except Exception as err:
            raise ConfigError(
                f"the variables given do not fit {self.model_name} with input {in_shape}: "
                f"{type(err).__name__}: {str(err)[:400]}. Check the model name, num_classes and "
                "that the weights belong to this architecture."
            ) from err
        if layer not in feats:
            raise ConfigError(
                f"{self.model_name} has no feature stage {layer!r}; choose one of "
                f"{sorted(feats)}."
            )
        self.dim = int(np.prod(feats[layer].shape[1:]))

    def describe(self) -> dict[str, Any]:
        """What produced these embeddings (stored in indexes; searches compare it)."""
        return {"model": self.model_name, "weights": self.weights, "layer": self.layer,
                "dim": self.dim, "transform": self.transform.to_dict()}

    def _run(self, n: int, chunk: Callable[[int, int], np.ndarray]) -> np.ndarray:
        """Embeddings of `chunk(start, stop)` (float32 model inputs) for rows 0..n, in
        fixed-size batches: the last one padded (same shape, same compiled program)."""
        out = []
        for start in range(0, n, self.batch_size):
            x = np.asarray(chunk(start, min(start + self.batch_size, n)), np.float32)
            rows = len(x)
            if rows < self.batch_size:
                x = np.concatenate([x, np.zeros((self.batch_size - rows, *x.shape[1:]),
                                                np.float32)])
            out.append(np.asarray(self._embed(self.variables, x))[:rows])
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    def embed_arrays(self, x: np.ndarray) -> np.ndarray:
        """Embeddings of model inputs [N, H, W, C] (already transformed)."""
        x = np.asarray(x, np.float32)
        if x.ndim != 4:
            raise InputError(f"embed_arrays needs [N, H, W, C] model inputs; got {x.shape}.")
        return self._run(len(x), lambda a, b: x[a:b])

    def embed_dataset(self, images: np.ndarray) -> np.ndarray:
        """Embeddings of a uint8 dataset [N, H, W, C] already at the transform's size (e.g. a
        training split), normalized batch by batch."""
        images = np.asarray(images)
        self.transform.normalize(images[:0])  # the shape check, before any work
        return self._run(len(images), lambda a, b: self.transform.normalize(images[a:b]))

    def __call__(self, images: Sequence[ImageLike] | ImageLike) -> np.ndarray:
        """Embeddings float32 [N, F] of paths, PIL images or arrays (one or a list)."""
        return self.embed_arrays(self.transform.batch(images))


class PixelExtractor:
    """Raw-pixel "embeddings": images resized to `size` (H, W), RGB in [0, 1], flattened:
    the baseline any learned embedding should beat."""

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
                "transform": {"size": list(self.size)}}

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


def extract_embeddings(
    model: Any,
    variables: Any,
    images: np.ndarray,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int = 256,
    layer: str = "pre_logits",
    out: str | os.PathLike | None = None,
) -> np.ndarray:
    """`model.features(...)[layer]` (eval mode) of every uint8 NHWC image, float32 [N, D],
    normalized with `mean` / `std` (the [0, 255] scale); saved to `out` (.npy) when given."""
    images = np.asarray(images)
    transform = EvalTransform(images.shape[1:3], images.shape[-1], tuple(mean), tuple(std))
    extractor = FeatureExtractor(model, variables, layer, transform=transform,
                                 batch_size=batch_size)
    embeddings = extractor.embed_dataset(images)
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        np.save(out, embeddings)
    return embeddings


def fit_classifiers(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    *,
    k: int = 5,
    c: float = 1.0,
    max_iter: int = 1000,
) -> dict[str, float]:
    """Test accuracy of a logistic-regression (linear) classifier and of a cosine k-NN
    fitted on standardized embeddings; with fit times in seconds."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train_x)
    a, b = scaler.transform(train_x), scaler.transform(test_x)
    t0 = time.perf_counter()
    linear = LogisticRegression(C=c, max_iter=max_iter).fit(a, train_y)
    t1 = time.perf_counter()
    knn = KNeighborsClassifier(n_neighbors=k, metric="cosine").fit(a, train_y)
    knn_acc = float(knn.score(b, test_y))
    t2 = time.perf_counter()
    return {
        "linear_accuracy": float(linear.score(b, test_y)),
        "knn_accuracy": knn_acc,
        "linear_seconds": t1 - t0,
        "knn_seconds": t2 - t1,
    }
