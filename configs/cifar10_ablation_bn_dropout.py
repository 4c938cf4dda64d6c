"""CIFAR-10 ablation: small_cnn with/without BN and dropout (:bn_dropout|bn|dropout|plain)."""

from . import cifar10_resnet18, default

VARIANTS = {
    "bn_dropout": (True, 0.3),
    "bn": (True, 0.0),
    "dropout": (False, 0.3),
    "plain": (False, 0.0),
}


def get_config(variant: str = "bn_dropout"):
    """small_cnn (width 32) for 20 epochs, SGD nesterov, cosine; lr 0.05 (0.02 without BN)."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {sorted(VARIANTS)}; got {variant!r}")
    batch_norm, dropout = VARIANTS[variant]
    config = cifar10_resnet18.cifar10_data(default.get_config())
    config.model.name = "small_cnn"
    config.model.kwargs.width = 32
    config.model.kwargs.batch_norm = batch_norm
    config.model.kwargs.dropout = dropout
    config.data.batch_size = 128
    config.num_epochs = 20
    config.optimizer.name = "sgd"
    config.optimizer.lr = 0.05 if batch_norm else 0.02
    config.optimizer.momentum = 0.9
    config.optimizer.nesterov = True
    config.optimizer.weight_decay = 5e-4
    config.schedule.name = "cosine"
    config.log_every = 50
    return config
