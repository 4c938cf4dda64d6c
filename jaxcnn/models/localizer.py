"""Single-object localization (the classification + localization network of the detection
lesson; Sermanet et al., OverFeat, 2014): a classifier backbone's pooled features feed two
heads, class logits and one box, trained together with cross-entropy + a box regression loss
(`jaxcnn.train.localization_task`).

Any registered classifier serves as the backbone (built with `num_classes=0`, as the siamese
wrapper does). Its features are pooled in one of two ways: "grid" (default) average-pools the
last feature map to `grid` x `grid` cells and flattens them, as AlexNet/VGG feed their FC layers
(the cells keep WHERE the object is, which a box needs); "avg" takes the backbone's global
average ("pre_logits"), which keeps little of it. An optional hidden FC layer (ReLU) follows.
The box head predicts (cx, cy, w, h) as fractions of the image width and height, through a
sigmoid so that the box stays in the image.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
from flax.core import FrozenDict

from jaxcnn.errors import ConfigError
from jaxcnn.models.layers import Dtype, adaptive_avg_pool, flatten
from jaxcnn.models.registry import create_model, get_model_spec, register_model

POOLS = ("grid", "avg")


@flax.struct.dataclass
class LocalizationOutputs:
    """Class logits [B, K] and boxes [B, 4] as (cx, cy, w, h) fractions of the image."""

    logits: jax.Array
    boxes: jax.Array


class Localizer(nn.Module):
    """Classifier backbone + class head + box head (see the module doc)."""

    backbone: str = "resnet18"
    backbone_kwargs: Mapping[str, Any] = FrozenDict()
    num_classes: int = 1
    pool: str = "grid"  # "grid" | "avg"
    grid: int = 4
    hidden: int = 256  # 0: the heads read the pooled features directly
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def __post_init__(self) -> None:
        if self.num_classes < 1:
            raise ConfigError(
                f"localizer needs num_classes >= 1 (the object classes); got {self.num_classes}."
            )
        if self.pool not in POOLS or self.grid < 1:
            raise ConfigError(
                f"localizer pool must be one of {POOLS} (and grid >= 1); got {self.pool!r}, "
                f"grid={self.grid}."
            )
        if get_model_spec(self.backbone).task != "classification":
            raise ConfigError(
                f"localizer needs a classification backbone (its pooled features feed the "
                f"heads); {self.backbone!r} is not one."
            )
        super().__post_init__()

    def setup(self) -> None:
        kwargs = {"dtype": self.dtype, "param_dtype": self.param_dtype, **self.backbone_kwargs}
        self.encoder = create_model(self.backbone, num_classes=0, **kwargs)
        dense = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        if self.hidden:
            self.fc = nn.Dense(self.hidden, **dense)
        self.class_head = nn.Dense(self.num_classes, **dense)
        self.box_head = nn.Dense(4, **dense)

    def __call__(self, x: jax.Array, train: bool = False) -> LocalizationOutputs:
        """Logits and normalized (cx, cy, w, h) boxes (float32) of a batch of images."""
        feats = self.encoder.features(x, train=train)
        if self.pool == "avg":
            z = feats["pre_logits"]
        else:
            last = [v for v in feats.values() if v.ndim == 4][-1]  # the deepest feature map
            z = flatten(adaptive_avg_pool(last, (self.grid, self.grid)))
        if self.hidden:
            z = nn.relu(self.fc(z))
        logits = self.class_head(z).astype(jnp.float32)
        boxes = jax.nn.sigmoid(self.box_head(z).astype(jnp.float32))
        return LocalizationOutputs(logits=logits, boxes=boxes)


@register_model(
    family="localizer", task="localization", input_shape=(160, 160, 3), min_input_size=32,
    num_classes=1,
)  # fmt: skip
def localizer(**kwargs) -> Localizer:
    """Single-object localizer; by default ResNet-18 features at 160x160, one class."""
    return Localizer(**kwargs)
