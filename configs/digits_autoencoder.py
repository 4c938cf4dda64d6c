"""The Keras listing's convolutional autoencoder on the digits at 28x28: reconstruction of the
input (task "reconstruction": MSE on the [0, 1] pixels, PSNR reported)."""

from . import default


def get_config():
    """conv_autoencoder, Adam 1e-3, 15 epochs of 1,437 digits in batches of 32."""
    config = default.get_config()
    config.model.name = "conv_autoencoder"
    config.data.source = "digits"
    config.data.image_size = 28
    config.data.batch_size = 32
    config.data.mean = (0.0,)
    config.data.std = (255.0,)  # inputs in [0, 1], the reconstruction target
    config.task_kwargs.loss = "mse"
    config.optimizer.name = "adam"
    config.optimizer.lr = 1e-3
    config.num_epochs = 15
    config.log_every = 10
    return config
