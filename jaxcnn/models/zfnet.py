"""ZFNet (Zeiler & Fergus, 2013, "Visualizing and Understanding Convolutional Networks"):
AlexNet retuned with the help of deconvnet visualizations. Figure 3 and section 5.1 of the
paper: 224x224x3 in, 96@7x7 stride 2 (AlexNet: 11x11 stride 4) -> 110x110, ReLU, 3x3/2
max-pool -> 55, local contrast normalization; 256@5x5 stride 2 -> 26, ReLU, 3x3/2 max-pool ->
13, normalization; 3x3 pad-1 convs with 512, 1024, 512 filters (the paper's larger model,
AlexNet: 384, 384, 256), 3x3/2 max-pool -> 6x6x512; FC 4096, 4096, classes with dropout 0.5.

Choices where the paper is silent or ambiguous:
- paddings are those that reproduce figure 3's map sizes (110, 55, 26, 13, 13, 6): conv1
  pads 1, the first two max-pools pad 1, conv2 and the last pool pad 0;
- the "contrast normalization" is AlexNet's LRN (size 5, alpha 1e-4, beta 0.75, k 2);
- initialization as section 3: weights N(0, 0.01), biases 0 (`kernel_init` / `bias_init`
  choose others by name).

The head is AlexNet's (`jaxcnn.models.alexnet.AlexNetBase.head`); names follow the
Caffe convention `conv1`..`conv5`, `fc6`..`fc8`. 107,627,624 parameters with 1000 classes.
"""

from __future__ import annotations

from functools import partial

import flax.linen as nn
import jax

from jaxcnn.models.alexnet import AlexNetBase
from jaxcnn.models.initializers import get_initializer
from jaxcnn.models.layers import LocalResponseNorm, adaptive_avg_pool, check_input, max_pool
from jaxcnn.models.registry import register_model


class ZFNet(AlexNetBase):
    """ZFNet with conv3-5 of 512/1024/512 filters; inputs of at least 65x65 (an adaptive
    avg-pool to 6x6 keeps the FC layers' shape, as torchvision's AlexNet does)."""

    default_kernel_init = staticmethod(get_initializer("normal(std=0.01)"))

    @nn.compact
    def features(self, x: jax.Array, train: bool = False) -> dict[str, jax.Array]:
        check_input(x, model="zfnet", channels=self.in_channels, min_size=65)
        conv = partial(nn.Conv, **self.layer_kwargs())
        act = self.act
        lrn = LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0)
        out = {}
        x = act("act1")(conv(96, (7, 7), (2, 2), padding=1, name="conv1")(x))  # 110
        x = out["stage1"] = lrn(max_pool(x, 3, 2, padding=1))  # 55
        x = act("act2")(conv(256, (5, 5), (2, 2), padding="VALID", name="conv2")(x))  # 26
        x = out["stage2"] = lrn(max_pool(x, 3, 2, padding=1))  # 13
        x = out["stage3"] = act("act3")(conv(512, (3, 3), padding=1, name="conv3")(x))
        x = out["stage4"] = act("act4")(conv(1024, (3, 3), padding=1, name="conv4")(x))
        x = act("act5")(conv(512, (3, 3), padding=1, name="conv5")(x))
        x = out["stage5"] = max_pool(x, 3, 2)  # 6
        out["pre_logits"], out["logits"] = self.head(
            adaptive_avg_pool(x, (6, 6)), ("fc6", "act6", "fc7", "act7", "fc8"), train
        )
        return out


@register_model(family="zfnet", input_shape=(224, 224, 3), min_input_size=65)
def zfnet(**kwargs) -> ZFNet:
    """ZFNet (Zeiler & Fergus, 2013), the 512/1024/512 model: 107,627,624 parameters."""
    return ZFNet(**kwargs)
