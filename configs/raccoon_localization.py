"""Single-object localization on the raccoon photos (PASCAL VOC XML, 160 train / 40 test):
small_cnn (width 16) features on a 4x4 grid -> class logits + one box, trained from scratch on
the largest box of each image; reports mean IoU and accuracy at IoU >= 0.5 on the test split.
The variant `configs/raccoon_localization.py:resnet18` swaps in a ResNet-18 backbone (lr 1e-3).

    python train.py --config configs/raccoon_localization.py --workdir runs/raccoon_loc \
        --config.data.path=data/raccoon       # tar xzf raccoon-voc.tar.gz -C data/
"""

from . import default

IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)


BACKBONES = {  # variant -> (backbone, its options, Adam learning rate)
    "small_cnn": ("small_cnn", {"width": 16}, 3e-3),
    "resnet18": ("resnet18", {}, 1e-3),
}


def get_config(variant: str = "small_cnn"):
    """128 px, flip + 8 px translation (boxes move with the image), Adam 3e-3 with warm-up and
    cosine decay, 30 epochs, smooth-L1 box loss on (cx, cy, w, h) fractions of the image."""
    if variant not in BACKBONES:
        raise ValueError(f"variant must be one of {sorted(BACKBONES)}; got {variant!r}")
    backbone, options, lr = BACKBONES[variant]
    config = default.get_config()
    config.data.source = "voc"
    config.data.path = "data/raccoon"
    config.data.image_size = 128
    config.data.mean = IMAGENET_MEAN
    config.data.std = IMAGENET_STD
    config.data.flip = True
    config.data.crop_padding = 8
    config.data.batch_size = 16
    config.data.eval_batch_size = 40
    config.model.name = "localizer"
    config.model.kwargs.backbone = backbone
    config.model.kwargs.backbone_kwargs = options
    config.task_kwargs.box_loss = "smooth_l1"
    config.num_epochs = 30
    config.optimizer.name = "adam"
    config.optimizer.lr = lr
    config.optimizer.weight_decay = 1e-4
    config.schedule.name = "warmup_cosine"
    config.schedule.warmup_epochs = 2.0
    config.log_every = 5
    return config
