"""jaxcnn: classic convolutional networks in JAX/Flax.

The public API: `create_model`, `list_models`, `count_params`, `summary`, plus the subpackages
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
    get_model_spec,
    init_variables,
    list_models,
    receptive_field,
    summary,
)

__version__ = "0.1.0"


def __getattr__(name: str):  # PEP 562: `jaxcnn.predict` without importing PIL/flax IO eagerly
    if name == "predict":
        from jaxcnn.pretrained.predict import predict

        return predict
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
    "get_model_spec",
    "init_variables",
    "list_models",
    "predict",
    "receptive_field",
    "summary",
]
