"""ResNet-50 on ImageNet as torchvision's classic recipe (references/classification, the one
behind `ResNet50_Weights.IMAGENET1K_V1`, acc@1 76.13%), read by the host input pipeline.

Data: tfds imagenet2012 prepared in array_record format (manual download) streamed through
`tfds.data_source`, or an ImageFolder tree converted once with `jaxcnn prepare`:

    jaxcnn prepare ~/imagenet --out ~/imagenet-records --splits train,val
    jaxcnn train --config imagenet_resnet50 --workdir runs/r50 \\
        --config.data.source=records --config.data.path=~/imagenet-records \\
        --config.data.test_split=val
"""

from jaxcnn.data.transforms import IMAGENET_MEAN, IMAGENET_STD

from . import default


def get_config():
    """90 epochs of SGD (momentum 0.9, lr 0.1 x batch/256, /10 at epochs 30 and 60, weight
    decay 1e-4 on every parameter); RandomResizedCrop(224) + flip for training, Resize(256)
    + CenterCrop(224) for evaluation, ImageNet mean/std. torchvision trains fp32 with batch
    256 on 8 GPUs; bf16 compute here (float32 parameters), --config.bf16=False to match.
    Batches above 256: add Goyal et al.'s (2017) 5-epoch linear warmup."""
    config = default.get_config()
    config.model.name = "resnet50"
    config.data.source = "tfds"
    config.data.name = "imagenet2012"
    config.data.test_split = "validation"
    config.data.on_device = "off"  # 1.28 M images: the host pipeline streams them
    # torchvision trains on all of train and reports the validation split (the 76.13%);
    # --config.data.valid_fraction=0.1 holds 10% of train out for checkpoint selection.
    config.data.valid_fraction = 0.0
    config.data.resized_crop = 224  # RandomResizedCrop: scale (0.08, 1), ratio (3/4, 4/3)
    config.data.flip = True
    config.data.eval_resize = 256
    config.data.mean = IMAGENET_MEAN
    config.data.std = IMAGENET_STD
    config.data.batch_size = 256
    config.num_epochs = 90
    config.bf16 = True
    config.optimizer.name = "sgd"
    # Derived from the batch size lazily, so --config.data.batch_size=1024 gives lr 0.4.
    del config.optimizer["lr"]  # a float field; re-created as a reference to the batch size
    config.optimizer.lr = config.data.get_ref("batch_size") * (0.1 / 256)
    config.optimizer.momentum = 0.9
    config.optimizer.weight_decay = 1e-4
    config.optimizer.decay_all = True  # torchvision decays biases and BN scales too
    config.schedule.name = "step"
    config.schedule.milestones = (30, 60)
    config.schedule.gamma = 0.1
    config.schedule.warmup_epochs = 0.0  # set 5.0 for batches above 256 (Goyal et al.)
    config.checkpoint.every_steps = 2000
    config.log_every = 100
    return config
