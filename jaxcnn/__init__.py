"""jaxcnn: classic convolutional networks in JAX/Flax.

The public API: `create_model`, `list_models`, `load_model` (timm/torchvision-style weights),
`predict`, `count_params`, `summary`, `feature_info`, plus the subpackages
`jaxcnn.train`, `jaxcnn.data`, `jaxcnn.pretrained` and `jaxcnn.similarity`.
"""

from jaxcnn.errors import (
    CheckpointError,
    ConfigError,
    DatasetError,
    InputError,
    JaxcnnError,
    OfflineError,
    TrainingError,
    UnknownModelError,
)
from jaxcnn.models import (
    conv_output_size,
    count_params,
    create_model,
    feature_info,
    get_model_spec,
    init_variables,
    receptive_field,
    summary,
)

__version__ = "0.1.0"


def __getattr__(name: str):  # PEP 562: the weights API without importing PIL/orbax eagerly
    if name == "predict":
        from jaxcnn.classify import predict

        return predict
    if name in ("load_model", "list_models"):
        from jaxcnn import loading

        return getattr(loading, name)
    raise AttributeError(f"module 'jaxcnn' has no attribute {name!r}")


__all__ = [
    "CheckpointError",
    "ConfigError",
    "DatasetError",
    "InputError",
    "JaxcnnError",
    "OfflineError",
    "TrainingError",
    "UnknownModelError",
    "conv_output_size",
    "count_params",
    "create_model",
    "feature_info",
    "get_model_spec",
    "init_variables",
    "list_models",
    "load_model",
    "predict",
    "receptive_field",
    "summary",
]
