"""A small CNN trained on the CIFAR-10 train JPEGs whose pooled features serve image retrieval
(bench/retrieval_cifar10.py measures precision@10 on the test set against raw pixels).
Sized for a 2-core CPU: small_cnn at width 16 (~73k parameters), 3 epochs."""

from . import default


def get_config():
    """small_cnn width 16 on data/cifar10 (ImageFolder JPEGs), Adam 3e-3 cosine, crop + flip."""
    config = default.get_config()
    config.model.name = "small_cnn"
    config.model.kwargs.width = 16
    config.data.source = "folder"
    config.data.path = "data/cifar10"
    config.data.batch_size = 128
    config.data.mean = (125.3, 123.0, 113.9)  # CIFAR-10 train statistics on [0, 255]
    config.data.std = (63.0, 62.1, 66.7)
    config.data.crop_padding = 4
    config.data.flip = True
    config.optimizer.name = "adam"
    config.optimizer.lr = 3e-3
    config.schedule.name = "cosine"
    config.num_epochs = 3
    config.checkpoint.every_steps = 100  # a usable checkpoint every few CPU minutes
    config.log_every = 50
    return config
