"""Siamese LeNet-5 on the digits with a LEARNED similarity (Koch et al., 2015): |f(x1) - f(x2)|
-> dense -> sigmoid scores "same digit", trained with binary cross-entropy on every pair of
each batch (positives and negatives weighted equally); balanced pair accuracy and recall@1
reported. Offline, about a minute on 2 CPU cores."""

from . import default


def get_config():
    """siamese(lenet5) with a 64-d projection and the similarity head, task siamese_pairs,
    Adam 1e-3 with cosine decay, 10 epochs of batch 64."""
    config = default.get_config()
    config.model.name = "siamese"
    config.model.kwargs.backbone = "lenet5"
    config.model.kwargs.backbone_kwargs = {"in_channels": 1}
    config.model.kwargs.embedding_dim = 64
    config.model.kwargs.similarity_head = True
    config.task = "siamese_pairs"
    config.data.source = "digits"
    config.data.batch_size = 64
    config.data.mean = (0.5 * 255,)
    config.data.std = (0.5 * 255,)
    config.optimizer.name = "adam"
    config.optimizer.lr = 1e-3
    config.schedule.name = "cosine"
    config.num_epochs = 10
    config.log_every = 10
    return config
