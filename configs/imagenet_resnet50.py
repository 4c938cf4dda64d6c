"""ResNet-50 on ImageNet (tfds imagenet2012, manual dir): the standard 90-epoch step recipe."""

from . import default

IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)


def get_config():
    """SGD 0.9, lr 0.1 x batch/256 (Goyal et al. 2017: batch 1024 -> 0.4, 5 warmup epochs),
    /10 at epochs 30, 60 and 80, weight decay 1e-4, flip, 224x224."""
    config = default.get_config()
    config.model.name = "resnet50"
    config.data.source = "tfds"
    config.data.name = "imagenet2012"
    config.data.test_split = "validation"
    config.data.image_size = 224
    config.data.mean = IMAGENET_MEAN
    config.data.std = IMAGENET_STD
    config.data.flip = True
    config.data.on_device = "off"  # 1.28M images: stream from host with prefetch
    config.data.batch_size = 1024
    config.num_epochs = 90
    config.bf16 = True
    config.optimizer.name = "sgd"
    config.optimizer.lr = 0.1 * config.data.batch_size / 256
    config.optimizer.momentum = 0.9
    config.optimizer.weight_decay = 1e-4
    config.schedule.name = "step"
    config.schedule.milestones = (30, 60, 80)
    config.schedule.warmup_epochs = 5.0
    config.checkpoint.every_steps = 2000
    config.log_every = 100
    return config
