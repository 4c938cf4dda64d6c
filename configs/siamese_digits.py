"""Siamese LeNet-5 on scikit-learn's digits for one-shot learning: trained on digits 0-6 only
(7, 8 and 9 never give a gradient), evaluated on 7-9 with `jaxcnn siamese-eval WORKDIR`.
Offline, well under a minute of training on 2 CPU cores."""

from . import default


def get_config():
    """siamese(lenet5): the 84-d pre-logits as embedding, all-triplets loss (margin 0.2) on
    L2-normalized embeddings, Adam 1e-3 with cosine decay, 10 epochs of batch 128."""
    config = default.get_config()
    config.model.name = "siamese"
    config.model.kwargs.backbone = "lenet5"
    config.model.kwargs.backbone_kwargs = {"in_channels": 1}
    config.task = "siamese"
    config.task_kwargs.loss = "triplet"
    config.task_kwargs.mining = "all"
    config.task_kwargs.margin = 0.2
    config.task_kwargs.normalize = True
    config.task_kwargs.train_classes = (0, 1, 2, 3, 4, 5, 6)
    config.data.source = "digits"
    config.data.batch_size = 128
    config.data.mean = (0.5 * 255,)
    config.data.std = (0.5 * 255,)
    config.optimizer.name = "adam"
    config.optimizer.lr = 1e-3
    config.schedule.name = "cosine"
    config.num_epochs = 10
    config.log_every = 10
    return config
