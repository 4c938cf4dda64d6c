"""The default: LeNet-5 on sklearn digits (32x32, fixed split), offline, <60 s on 2 CPUs, >=97%."""

from . import default


def get_config():
    """LeNet-5, Adam 3e-3 with cosine decay, 1-pixel random crops, label smoothing 0.1,
    15 epochs of 1,437 images in batches of 32."""
    config = default.get_config()
    config.model.name = "lenet5"
    config.data.source = "digits"
    config.data.batch_size = 32
    config.data.crop_padding = 1
    config.label_smoothing = 0.1
    config.data.mean = (0.5 * 255,)
    config.data.std = (0.5 * 255,)
    config.optimizer.name = "adam"
    config.optimizer.lr = 3e-3
    config.schedule.name = "cosine"
    config.num_epochs = 15
    config.log_every = 10
    return config
