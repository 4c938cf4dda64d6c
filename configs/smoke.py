"""Tiny end-to-end run for tests: LeNet-5, 256 digits, 2 epochs, batch 32, seconds on CPU."""

from . import default


def get_config():
    """Two short epochs of LeNet-5 on a slice of the digits."""
    config = default.get_config()
    config.data.source = "digits"
    config.data.max_examples = 256
    config.data.batch_size = 32
    config.data.mean = (127.5,)
    config.data.std = (127.5,)
    config.optimizer.name = "adam"
    config.optimizer.lr = 3e-3
    config.num_epochs = 2
    config.log_every = 4
    config.checkpoint.every_steps = 3
    config.lr_find.steps = 30
    return config
