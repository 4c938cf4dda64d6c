"""Siamese small CNN on CIFAR-10 for one-shot learning: trained on classes 0-6 (airplane,
automobile, bird, cat, deer, dog, frog in ImageFolder's sorted order), evaluated on the held-out
7-9 (horse, ship, truck) with `jaxcnn siamese-eval WORKDIR`.

Data: the ImageFolder JPEGs (default data/cifar10) or tfds with
--config.data.source=tfds --config.data.name=cifar10."""

from . import siamese_digits


def get_config():
    """The digits recipe (all-triplets loss, margin 0.2, classes 0-6) on siamese(small_cnn
    width 32, 64-d projection), crop + flip, batch 256, 30 epochs."""
    config = siamese_digits.get_config()
    config.model.kwargs.backbone = "small_cnn"
    config.model.kwargs.backbone_kwargs = {"width": 32}
    config.model.kwargs.embedding_dim = 64
    config.data.source = "folder"
    config.data.path = "data/cifar10"
    config.data.batch_size = 256
    config.data.mean = (125.3, 123.0, 113.9)
    config.data.std = (63.0, 62.1, 66.7)
    config.data.crop_padding = 4
    config.data.flip = True
    config.num_epochs = 30
    config.log_every = 20
    return config
