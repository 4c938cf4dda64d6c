"""The model zoo: importing this package registers every family."""

from jaxcnn.models import (  # noqa: F401  (importing a family registers its models)
    airbench,
    alexnet,
    autoencoder,
    fasterrcnn,
    googlenet,
    lenet,
    localizer,
    mobilenet,
    resnet,
    siamese,
    small_cnn,
    unet,
    vgg,
    zfnet,
)
from jaxcnn.models.layers import conv_output_size
from jaxcnn.models.registry import (
    ModelSpec,
    abstract_variables,
    count_params,
    create_model,
    feature_info,
    get_model_spec,
    init_variables,
    list_models,
    model_options,
    register_model,
)
from jaxcnn.models.summary import LayerRow, Summary, receptive_field, summary

__all__ = [
    "LayerRow",
    "ModelSpec",
    "Summary",
    "abstract_variables",
    "conv_output_size",
    "count_params",
    "create_model",
    "feature_info",
    "get_model_spec",
    "init_variables",
    "list_models",
    "model_options",
    "receptive_field",
    "register_model",
    "summary",
]
