"""Semantic segmentation end to end: a small U-Net on the shapes set generated offline
(jaxcnn.data.synthetic: circles, squares and triangles with per-class masks, 64x64), scored
by per-class and mean IoU, Dice and pixel accuracy; `--eval_only` draws the predicted masks
over the test images (segmentation.png)."""

from . import default


def get_config():
    """unet with 8 base filters, BN and dropout 0.1, 4 classes (background + 3 shapes),
    Adam 3e-3 with cosine decay, 10 epochs of 1,024 images in batches of 32, flips."""
    config = default.get_config()
    config.model.name = "unet"
    config.model.kwargs.n_filters = 8
    config.data.source = "shapes"
    config.data.image_size = 64
    config.data.batch_size = 32
    config.data.flip = True
    config.data.vertical_flip = True
    config.data.mean = (127.5,)
    config.data.std = (127.5,)
    config.optimizer.name = "adam"
    config.optimizer.lr = 3e-3
    config.schedule.name = "cosine"
    config.num_epochs = 10
    config.log_every = 8
    return config
