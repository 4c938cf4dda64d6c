"""The model zoo: importing this package registers every family."""

from jaxcnn.models import lenet  # noqa: F401  (registers models)
from jaxcnn.models.registry import (
    ModelSpec,
    abstract_variables,
    count_params,
    create_model,
    get_model_spec,
    init_variables,
    list_models,
    register_model,
)

__all__ = [
    "ModelSpec",
    "abstract_variables",
    "count_params",
    "create_model",
    "get_model_spec",
    "init_variables",
    "list_models",
    "register_model",
]
