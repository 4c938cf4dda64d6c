"""CIFAR-10 plain vs residual nets (He 2015 fig. 4): config.py:resnet18|plain18|resnet34|plain34."""

from . import cifar10_resnet18

VARIANTS = {
    "resnet18": ("resnet18", True),
    "plain18": ("resnet18", False),
    "resnet34": ("resnet34", True),
    "plain34": ("resnet34", False),
}


def get_config(variant: str = "plain18"):
    """The ResNet-18 recipe with the model (and its skip connections) from the variant."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {sorted(VARIANTS)}; got {variant!r}")
    name, skip = VARIANTS[variant]
    config = cifar10_resnet18.get_config()
    config.model.name = name
    config.model.kwargs.skip = skip
    config.label_smoothing = 0.0
    return config
