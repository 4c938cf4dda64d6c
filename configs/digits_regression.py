"""Regression on real handwriting: the rotation angle of each digit (rotated by U(-45, 45)
degrees, target = angle / 45) from the image, with a small CNN and the Huber loss
(jaxcnn.losses; task_kwargs.loss=mse|l1|huber|smooth_l1)."""

from . import default


def get_config():
    """small_cnn (width 16, BN) on the rotated digits, Adam 2e-3 with cosine decay, 12
    epochs; reports the mean absolute error of angle / 45 (x 45 for degrees)."""
    config = default.get_config()
    config.model.name = "small_cnn"
    config.model.kwargs.width = 16
    config.task = "regression"
    config.task_kwargs.loss = "huber"
    config.task_kwargs.delta = 1.0
    config.data.source = "rotated_digits"
    config.data.batch_size = 32
    config.data.mean = (0.5 * 255,)
    config.data.std = (0.5 * 255,)
    config.optimizer.name = "adam"
    config.optimizer.lr = 2e-3
    config.schedule.name = "cosine"
    config.num_epochs = 12
    config.log_every = 10
    return config
