"""Base config: every key the trainer reads, with defaults (LeNet-5 on the embedded digits)."""

from jaxcnn.train.config import default_config


def get_config():
    """The base ConfigDict; experiments copy it and change only what differs."""
    return default_config()
