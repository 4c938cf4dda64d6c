"""The model zoo: importing this package registers every family."""

from jaxcnn.models import (  # noqa: F401  (importing a family registers its models)
    airbench,
    alexnet,
    autoencoder,
    googlenet,
    lenet,
    localizer,
    mobilenet,
    resnet,
    siamese,
    small_cnn,
    unet,
    vgg,
)
from jaxcnn.models.registry import (
    ModelSpec,
    abstract_variables,
    count_params,
    create_model,
    get_model_spec,
    init_variables,
    list_models,
    model_options,
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
    "model_options",
    "register_model",
]
