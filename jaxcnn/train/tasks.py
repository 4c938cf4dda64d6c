"""Tasks: what a batch means to the loss. The train and eval steps call only this interface,
so a new objective (e.g. a contrastive or triplet loss for siamese networks) is a new `Task`
subclass registered with `@register_task("name")`, not a change to the step.

All metric values a task returns are SUMS over the batch (plus a "count"), so they add up
over steps and devices exactly; `summarize` turns summed values into means."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxcnn import losses
from jaxcnn.errors import ConfigError
from jaxcnn.models.layers import AuxOutputs

Metrics = dict[str, jax.Array]

_TASKS: dict[str, type[Task]] = {}


def register_task(name: str) -> Callable[[type[Task]], type[Task]]:
    """Class decorator adding a Task under `name` (config.task)."""

    def decorate(cls: type[Task]) -> type[Task]:
        cls.name = name
        _TASKS[name] = cls
        return cls

    return decorate


def get_task(name: str, config: Any) -> Task:
    """The Task registered as `name`, built from the training config."""
    if name not in _TASKS:
        raise ConfigError(f"unknown task {name!r}; registered tasks: {sorted(_TASKS)}.")
    return _TASKS[name](config)


class Task:
    """Base class. Subclasses implement `loss` and `eval_metrics`; override `model_inputs`
    when the model takes more than `batch["image"]` (pairs, triplets)."""

    name = "task"
    best_metric = "accuracy"  # summarized metric that picks the best checkpoint
    best_mode = "max"
    # Keys a training batch must hold besides "image" (checked against the data at start-up).
    batch_keys: tuple[str, ...] = ()
    # The model's head is sized by the dataset: num_classes = the number of classes.
    uses_num_classes: bool = False
    # The model's outputs are class scores: --eval_only adds a confusion matrix.
    reports_confusion: bool = False
    # The model's classes are the dataset's plus a background class at index 0 (detectors).
    background_class: bool = False
    # The model's outputs are per-pixel class scores: --eval_only overlays predicted masks.
    reports_overlay: bool = False
    # The model method the steps call (None: __call__), e.g. a siamese network's
    # "pairwise_similarity" for a loss on every pair of the batch.
    model_method: str | None = None

    def __init__(self, config: Any):
        self.config = config
        self.kwargs = dict(config.get("task_kwargs", {}) or {})

    def model_inputs(self, batch: dict[str, jax.Array]) -> tuple[jax.Array, ...]:
        """Positional arguments of `model.apply` (after the variables)."""
        return (batch["image"],)

    def num_outputs(self, splits: Any) -> int | None:
        """The head size the data asks for (`num_classes` of the model), or None to keep the
        model's own: the number of classes (plus the background class) when
        `uses_num_classes`."""
        if not self.uses_num_classes:
            return None
        return splits.num_classes + int(self.background_class)

    def loss(self, outputs: Any, batch: dict[str, jax.Array]) -> tuple[jax.Array, Metrics]:
        """(scalar mean loss to differentiate, metric sums) for a training batch."""
        raise NotImplementedError

    def eval_metrics(self, outputs: Any, batch: dict[str, jax.Array]) -> Metrics:
        """Metric sums for an eval batch; `batch["weight"]` is 0 on padding rows."""
        raise NotImplementedError

    def summarize(self, sums: dict[str, float]) -> dict[str, float]:
        """Means from sums: every key but "count" divided by "count"."""
        count = max(float(sums.get("count", 0.0)), 1e-12)
        return {k: float(v) / count for k, v in sums.items() if k != "count"}

    def reduce(self, outputs: Iterable[dict[str, Any]]) -> dict[str, float]:
        """A split's metrics from the eval step's per-batch outputs: their sums, summarized.
        A task whose metric is not a sum over examples (detection mAP) overrides this."""
        total: dict[str, Any] | None = None
        for out in outputs:
            total = out if total is None else {k: total[k] + out[k] for k in out}
        return self.summarize(total or {})

    def check_data(self, splits: Any) -> None:
        """Raise DatasetError for data this task cannot train on (checked at start-up)."""


def _weighted(x: jax.Array, weight: jax.Array | None) -> jax.Array:
    if weight is None:
        return jnp.sum(x)
    return jnp.sum(x * weight.reshape(weight.shape + (1,) * (x.ndim - weight.ndim)))


@register_task("classification")
class Classification(Task):
    """Softmax cross-entropy with optional label smoothing; top-1/top-5 accuracy. With
    auxiliary classifiers (GoogLeNet `AuxOutputs`) the training loss is
    `ce(logits) + aux_weight * sum(ce(aux))`, as in Szegedy et al. (2014)."""

    batch_keys = ("label",)
    uses_num_classes = True
    reports_confusion = True

    def _ce(self, logits: jax.Array, labels: jax.Array) -> jax.Array:
        num_classes = logits.shape[-1]
        onehot = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
        smoothing = float(self.config.get("label_smoothing", 0.0))
        if smoothing:
            onehot = optax.smooth_labels(onehot, smoothing)
        return optax.softmax_cross_entropy(logits.astype(jnp.float32), onehot)

    def loss(self, outputs: Any, batch: dict[str, jax.Array]) -> tuple[jax.Array, Metrics]:
        labels = batch["label"]
        logits, aux = outputs, ()
        if isinstance(outputs, AuxOutputs):
            logits, aux = outputs.logits, outputs.aux_logits
        per_example = self._ce(logits, labels)
        loss = jnp.mean(per_example)
        if aux:
            loss = loss + outputs.aux_weight * sum(jnp.mean(self._ce(a, labels)) for a in aux)
        correct = jnp.argmax(logits, -1) == labels
        return loss, {
            "loss": jnp.sum(per_example),
            "accuracy": jnp.sum(correct.astype(jnp.float32)),
            "count": jnp.asarray(labels.shape[0], jnp.float32),
        }

    def eval_metrics(self, outputs: Any, batch: dict[str, jax.Array]) -> Metrics:
        logits = outputs.logits if isinstance(outputs, AuxOutputs) else outputs
        labels, weight = batch["label"], batch.get("weight")
        per_example = self._ce(logits, labels)
        k = min(5, logits.shape[-1])
        topk = jax.lax.top_k(logits, k)[1]
        top5 = jnp.any(topk == labels[:, None], axis=-1)
        top1 = jnp.argmax(logits, -1) == labels
        ones = jnp.ones_like(per_example)
        return {
            "loss": _weighted(per_example, weight),
            "accuracy": _weighted(top1.astype(jnp.float32), weight),
            "top5_accuracy": _weighted(top5.astype(jnp.float32), weight),
            "count": _weighted(ones, weight),
        }


@register_task("regression")
class Regression(Task):
    """Regression of `batch["target"]` (float [N, D], or [N]) from the image: the model's D
    outputs (its head sized by the target, `num_classes=D`) against the targets with a loss
    of `jaxcnn.losses` chosen by `task_kwargs.loss` ("mse" default, "l1"/"mae", "huber" with
    `delta`, "smooth_l1" with `beta`). Reports the loss and, per target value, the mean
    absolute error (picks the best checkpoint), mse and rmse."""

    best_metric = "mae"
    best_mode = "min"
    batch_keys = ("target",)

    def __init__(self, config: Any):
        super().__init__(config)
        unknown = set(self.kwargs) - {"loss", "delta", "beta"}
        if unknown:
            raise ConfigError(f"unknown regression task_kwargs {sorted(unknown)}; valid: loss, "
                              "delta (huber), beta (smooth_l1).")
        self.loss_name = self.kwargs.get("loss", "mse")
        if self.loss_name not in losses.REGRESSION_LOSSES:
            raise ConfigError(f"regression loss must be one of {losses.REGRESSION_LOSSES}; got "
                              f"{self.loss_name!r}.")
        extra = {"huber": "delta", "smooth_l1": "beta"}.get(self.loss_name)
        self.loss_kwargs = {extra: float(self.kwargs[extra])} if extra in self.kwargs else {}

    def num_outputs(self, splits: Any) -> int:
        """One output per target value."""
        return int(np.prod(splits.train.arrays["target"].shape[1:], dtype=int))

    def _per_example(self, outputs: Any, batch: dict[str, jax.Array]
                     ) -> tuple[jax.Array, jax.Array, jax.Array]:
        pred = outputs.astype(jnp.float32).reshape(outputs.shape[0], -1)
        target = batch["target"].astype(jnp.float32).reshape(pred.shape[0], -1)
        if pred.shape != target.shape:
            raise ConfigError(
                f"regression outputs {tuple(outputs.shape)} do not match the targets "
                f"{tuple(batch['target'].shape)}; build the model with num_classes="
                f"{target.shape[1]} (setup does so from the data)."
            )
        loss = losses.get_loss(self.loss_name)(pred, target, reduction="none", **self.loss_kwargs)
        return (jnp.mean(loss, axis=1), jnp.mean(jnp.abs(pred - target), axis=1),
                jnp.mean(jnp.square(pred - target), axis=1))

    def _sums(self, outputs: Any, batch: dict[str, jax.Array], weight: jax.Array | None
              ) -> tuple[jax.Array, Metrics]:
        loss, mae, mse = self._per_example(outputs, batch)
        return jnp.mean(loss), {
            "loss": _weighted(loss, weight),
            "mae": _weighted(mae, weight),
            "mse": _weighted(mse, weight),
            "count": _weighted(jnp.ones_like(loss), weight),
        }

    def loss(self, outputs: Any, batch: dict[str, jax.Array]) -> tuple[jax.Array, Metrics]:
        return self._sums(outputs, batch, None)

    def eval_metrics(self, outputs: Any, batch: dict[str, jax.Array]) -> Metrics:
        return self._sums(outputs, batch, batch.get("weight"))[1]

    def summarize(self, sums: dict[str, float]) -> dict[str, float]:
        """Means per example and target value, and rmse = sqrt(mse)."""
        out = super().summarize(sums)
        out["rmse"] = float(np.sqrt(max(out["mse"], 0.0)))
        return out


@register_task("reconstruction")
class Reconstruction(Task):
    """Autoencoders: the target is the input image on the [0, 1] scale (the normalization
    undone); loss "mse" on the output, or "bce" treating the output as logits. Reports PSNR."""

    best_metric = "psnr"

    def __init__(self, config: Any):
        super().__init__(config)
        self.loss_name = self.kwargs.get("loss", "mse")
        if self.loss_name not in ("mse", "bce"):
            raise ConfigError(f"reconstruction loss must be mse or bce; got {self.loss_name!r}.")
        self.mean = tuple(config.data.mean)
        self.std = tuple(config.data.std)

    def _per_example(self, outputs: jax.Array, image: jax.Array) -> tuple[jax.Array, jax.Array]:
        # Per-channel statistics broadcast over [N, H, W, C] (explicit rank: no promotion).
        shape = (1,) * (image.ndim - 1) + (-1,)
        mean = jnp.asarray(self.mean, jnp.float32).reshape(shape)
        std = jnp.asarray(self.std, jnp.float32).reshape(shape)
        target = (image * std + mean) / 255.0
        out = outputs.astype(jnp.float32)
        if out.shape != target.shape:
            raise ConfigError(
                f"reconstruction needs outputs shaped like the input {target.shape}; the model "
                f"returned {out.shape}."
            )
        axes = tuple(range(1, target.ndim))
        if self.loss_name == "bce":
            per = jnp.mean(optax.sigmoid_binary_cross_entropy(out, target), axis=axes)
            out = jax.nn.sigmoid(out)
        mse = jnp.mean(jnp.square(out - target), axis=axes)
        per = mse if self.loss_name == "mse" else per
        return per, -10.0 * jnp.log10(jnp.maximum(mse, 1e-10))

    def loss(self, outputs: Any, batch: dict[str, jax.Array]) -> tuple[jax.Array, Metrics]:
        per, psnr = self._per_example(outputs, batch["image"])
        return jnp.mean(per), {
            "loss": jnp.sum(per),
            "psnr": jnp.sum(psnr),
            "count": jnp.asarray(per.shape[0], jnp.float32),
        }

    def eval_metrics(self, outputs: Any, batch: dict[str, jax.Array]) -> Metrics:
        per, psnr = self._per_example(outputs, batch["image"])
        weight = batch.get("weight")
        return {
            "loss": _weighted(per, weight),
            "psnr": _weighted(psnr, weight),
            "count": _weighted(jnp.ones_like(per), weight),
        }


@register_task("segmentation")
class Segmentation(Task):
    """Per-pixel classification (U-Net): `batch["mask"]` int [N, H, W]; logits [N, H, W, K].
    K = 1: binary cross-entropy on the logit (classes 0 and 1); K > 1: softmax cross-entropy.

    Metrics over the whole split, from per-class pixel counts summed over batches (so a
    dataset's IoU is sum(intersection) / sum(union), not a mean of per-image ratios), as
    torchmetrics' `JaccardIndex` / `Dice` with macro averaging:
    - `accuracy`: correct pixels / pixels;
    - `iou_<c>` = |pred = c and true = c| / |pred = c or true = c| for every class c that
      occurs in the predictions or the masks, and `iou` their mean (background included);
    - `dice` = the mean over the same classes of 2 |pred = c and true = c| / (|pred = c| +
      |true = c|).
    Predicting class 1 where the mask says class 2 scores 0 for both classes."""

    best_metric = "iou"
    batch_keys = ("mask",)
    uses_num_classes = True
    reports_overlay = True

    def _per_pixel(self, logits: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
        logits = logits.astype(jnp.float32)
        if logits.shape[:3] != mask.shape:
            raise ConfigError(
                f"segmentation logits {logits.shape} do not match the masks {mask.shape}."
            )
        if logits.shape[-1] == 1:
            loss = optax.sigmoid_binary_cross_entropy(logits[..., 0], mask.astype(jnp.float32))
            pred = (logits[..., 0] > 0).astype(jnp.int32)
        else:
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, mask)
            pred = jnp.argmax(logits, -1)
        return loss, pred

    def _sums(self, logits: jax.Array, batch: dict[str, jax.Array], weight: jax.Array | None
              ) -> tuple[jax.Array, Metrics]:
        mask = batch["mask"]
        loss, pred = self._per_pixel(logits, mask)
        per_image_loss = jnp.mean(loss, axis=(1, 2))
        sums = {
            "loss": _weighted(per_image_loss, weight),
            "count": _weighted(jnp.ones_like(per_image_loss), weight),
            **segmentation_counts(pred, mask, max(2, logits.shape[-1]), weight),
        }
        return jnp.mean(per_image_loss), sums

    def summarize(self, sums: dict[str, float]) -> dict[str, float]:
        """Mean loss per image; pixel accuracy, per-class and mean IoU, mean Dice."""
        count = max(float(sums.get("count", 0.0)), 1e-12)
        return {"loss": float(sums["loss"]) / count, **segmentation_scores(sums)}

    def loss(self, outputs: Any, batch: dict[str, jax.Array]) -> tuple[jax.Array, Metrics]:
        return self._sums(outputs, batch, None)

    def eval_metrics(self, outputs: Any, batch: dict[str, jax.Array]) -> Metrics:
        return self._sums(outputs, batch, batch.get("weight"))[1]


def segmentation_counts(pred: jax.Array, true: jax.Array, num_classes: int,
                        weight: jax.Array | None = None) -> Metrics:
    """Pixel counts of int maps pred, true [N, H, W], summed over the batch (each image
    weighted by `weight`): "correct", "pixels", and for each class c "inter_c" (pred = true
    = c), "pred_c" (pred = c) and "true_c" (true = c)."""
    n = pred.shape[0]
    per_image = {
        "correct": jnp.sum(pred == true, axis=(1, 2)),
        "pixels": jnp.full((n,), pred.shape[1] * pred.shape[2]),
    }
    for c in range(num_classes):
        p, t = pred == c, true == c
        per_image[f"inter_{c}"] = jnp.sum(p & t, axis=(1, 2))
        per_image[f"pred_{c}"] = jnp.sum(p, axis=(1, 2))
        per_image[f"true_{c}"] = jnp.sum(t, axis=(1, 2))
    return {k: _weighted(v.astype(jnp.float32), weight) for k, v in per_image.items()}


def segmentation_scores(counts: dict[str, float]) -> dict[str, float]:
    """accuracy, iou (mean over the classes that occur), iou_<c> per class, dice (mean) from
    `segmentation_counts` summed over a split."""
    classes = sorted(int(k.split("_")[1]) for k in counts if k.startswith("inter_"))
    out = {"accuracy": float(counts["correct"]) / max(float(counts["pixels"]), 1.0)}
    ious, dices = [], []
    for c in classes:
        inter, p, t = (float(counts[f"{k}_{c}"]) for k in ("inter", "pred", "true"))
        union = p + t - inter
        if union <= 0:  # the class occurs nowhere: no score, as torchmetrics' absent classes
            continue
        out[f"iou_{c}"] = inter / union
        ious.append(inter / union)
        dices.append(2.0 * inter / (p + t))
    out["iou"] = sum(ious) / len(ious) if ious else float("nan")
    out["dice"] = sum(dices) / len(dices) if dices else float("nan")
    return out
