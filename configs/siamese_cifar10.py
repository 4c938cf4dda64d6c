"""Siamese small CNN on CIFAR-10 for one-shot learning: trained on classes 0-6 (airplane,
automobile, bird, cat, deer, dog, frog in ImageFolder's sorted order), evaluated on the held-out
7-9 (horse, ship, truck) with `jaxcnn siamese-eval WORKDIR`.

Data: the ImageFolder JPEGs (default data/cifar10) or tfds with
--config.data.source=tfds --config.data.name=cifar10."""

from configs import default


def get_config():
    """siamese(small_cnn width 32, 64-d projection), all-triplets loss, Adam 1e-3 cosine."""
    config = default.get_config()
    config.model.name = "siamese"
    config.model.kwargs.backbone = "small_cnn"
    config.model.kwargs.backbone_kwargs = {"width": 32}
    config.model.kwargs.embedding_dim = 64
    config.task = "siamese"
    config.task_kwargs.loss = "triplet"
    config.task_kwargs.mining = "all"
    config.task_kwargs.margin = 0.2
    config.task_kwargs.normalize = True
    config.task_kwargs.train_classes = (0, 1, 2, 3, 4, 5, 6)
    config.data.source = "folder"
    config.data.path = "data/cifar10"
    config.data.batch_size = 256
    config.data.mean = (125.3, 123.0, 113.9)
    config.data.std = (63.0, 62.1, 66.7)
    config.data.crop_padding = 4
    config.data.flip = True
    config.optimizer.name = "adam"
    config.optimizer.lr = 1e-3
    config.schedule.name = "cosine"
    config.num_epochs = 30
    return config
