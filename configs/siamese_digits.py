"""Siamese LeNet-5 on scikit-learn's digits for one-shot learning: trained on digits 0-6 only
(7, 8, 9 never give a gradient), evaluated on 7-9 with `jaxcnn siamese-eval`. Offline, about a
minute on 2 CPU cores."""

from configs import default


def get_config():
    """LeNet-5 with a 32-d embedding head, batch-hard triplet loss, Adam 1e-3, 40 epochs."""
    config = default.get_config()
    config.model.name = "lenet5"
    config.model.kwargs.num_classes = 32  # the "logits" layer is the 32-d embedding
    config.task = "siamese"
    config.task_kwargs.loss = "triplet"
    config.task_kwargs.mining = "hard"
    config.task_kwargs.margin = 0.5
    config.task_kwargs.normalize = True
    config.task_kwargs.train_classes = (0, 1, 2, 3, 4, 5, 6)
    config.data.source = "digits"
    config.data.batch_size = 128
    config.data.mean = (0.5 * 255,)
    config.data.std = (0.5 * 255,)
    config.optimizer.name = "adam"
    config.optimizer.lr = 1e-3
    config.schedule.name = "cosine"
    config.num_epochs = 40
    config.log_every = 10
    return config
