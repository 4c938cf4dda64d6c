"""torchvision's ImageNet weights in jaxcnn: the weights registry (URLs, hashes, metrics,
evaluation transforms), the converters (`from_torchvision`), loading/downloading (`load`),
saving converted variables without torch (`jaxcnn.predict` and `jaxcnn.load_model` use
them)."""

from jaxcnn.pretrained.convert import (
    KeyMap,
    batch_norm_leaves,
    chw_to_hwc_dense_kernel,
    conv_kernel,
    convert,
    dense_kernel,
)
from jaxcnn.pretrained.hub import (
    cache_dir,
    download,
    load,
    read_state_dict,
    restore_variables,
    save_variables,
)
from jaxcnn.pretrained.torchvision import from_torchvision, key_map_for
from jaxcnn.pretrained.weights import (
    WEIGHTS,
    DetectionWeights,
    Weights,
    coco_categories,
    get_weights,
    imagenet_categories,
    list_weights,
)

__all__ = [
    "WEIGHTS",
    "DetectionWeights",
    "KeyMap",
    "Weights",
    "batch_norm_leaves",
    "cache_dir",
    "coco_categories",
    "chw_to_hwc_dense_kernel",
    "conv_kernel",
    "convert",
    "dense_kernel",
    "download",
    "from_torchvision",
    "get_weights",
    "imagenet_categories",
    "key_map_for",
    "list_weights",
    "load",
    "read_state_dict",
    "restore_variables",
    "save_variables",
]
