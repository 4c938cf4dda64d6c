"""ResNet-18 (cifar stem) on CIFAR-10 (tfds, or --config.data.source=folder), standard recipe."""

from . import default

CIFAR10_MEAN = (0.4914 * 255, 0.4822 * 255, 0.4465 * 255)
CIFAR10_STD = (0.2470 * 255, 0.2435 * 255, 0.2616 * 255)


def cifar10_data(config):
    """CIFAR-10 through tfds (or an image folder), normalized, random crop 4 + flip."""
    config.data.source = "tfds"
    config.data.name = "cifar10"
    config.data.image_size = 0
    config.data.channels = 3
    config.data.mean = CIFAR10_MEAN
    config.data.std = CIFAR10_STD
    config.data.crop_padding = 4
    config.data.flip = True
    config.data.batch_size = 512
    config.data.eval_batch_size = 1000
    return config


def get_config():
    """Random crop (4-pixel padding) + flip, SGD momentum 0.9 nesterov, weight decay 5e-4,
    30 epochs one-cycle (peak 0.4 for batch 512), label smoothing 0.1, bf16 compute."""
    config = cifar10_data(default.get_config())
    config.model.name = "resnet18"
    config.model.kwargs.stem = "cifar"
    config.num_epochs = 30
    config.bf16 = True
    config.label_smoothing = 0.1
    config.optimizer.name = "sgd"
    config.optimizer.lr = 0.4
    config.optimizer.momentum = 0.9
    config.optimizer.nesterov = True
    config.optimizer.weight_decay = 5e-4
    config.schedule.name = "onecycle"
    config.schedule.pct_start = 0.25
    config.schedule.div_factor = 25.0
    config.schedule.final_div_factor = 1e3
    config.checkpoint.every_steps = 500
    config.log_every = 50
    return config
