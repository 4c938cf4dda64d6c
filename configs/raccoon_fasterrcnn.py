"""Faster R-CNN ResNet-18-FPN trained from scratch on the raccoon photos (PASCAL VOC XML, 160
train / 40 test), torchvision's recipe at CPU scale: every image resized to 320 x 320
(GeneralizedRCNNTransform's `fixed_size`, the VOC source's resize), horizontal flips, SGD with
momentum 0.9 and weight decay 1e-4 on every trainable parameter, the four losses summed.
Reports COCO mAP / mAP@0.5 (`coco_evaluate`) and VOC AP@0.5 on the test split.

    tar xzf raccoon-voc.tar.gz -C data/
    python train.py --config configs/raccoon_fasterrcnn.py --workdir runs/raccoon_frcnn \\
        --config.data.path=data/raccoon
    python -m jaxcnn detect photo.jpg --weights runs/raccoon_frcnn --out detections/
"""

from . import default

SIZE = 320


def get_config():
    """320 px, flips, batch 4, SGD 0.01 with a 1-epoch warm-up and cosine decay, 24 epochs;
    512 -> 128 RoIs per image and 1000 RPN proposals in training (one or two raccoons per
    photo need no more, and the CPU run is 3x cheaper)."""
    config = default.get_config()
    config.task = "detection"
    config.data.source = "voc"
    config.data.path = "data/raccoon"
    config.data.image_size = SIZE
    config.data.mean = (0.485 * 255, 0.456 * 255, 0.406 * 255)  # the model's image_mean
    config.data.std = (0.229 * 255, 0.224 * 255, 0.225 * 255)
    config.data.flip = True
    config.data.batch_size = 4
    config.data.eval_batch_size = 8
    config.model.name = "fasterrcnn_resnet18_fpn"
    config.model.kwargs.min_size = SIZE
    config.model.kwargs.max_size = SIZE
    config.model.kwargs.fixed_size = (SIZE, SIZE)
    config.model.kwargs.trainable_backbone_layers = 5  # from scratch: everything trains
    config.model.kwargs.norm = "batch"  # torchvision without pretrained weights: BatchNorm2d
    config.model.kwargs.rpn_pre_nms_top_n_train = 1000
    config.model.kwargs.rpn_post_nms_top_n_train = 1000
    config.model.kwargs.box_batch_size_per_image = 128
    config.num_epochs = 24
    config.optimizer.name = "sgd"
    config.optimizer.lr = 0.01
    config.optimizer.momentum = 0.9
    config.optimizer.weight_decay = 1e-4
    config.optimizer.decay_all = True  # torchvision's reference decays every parameter
    config.schedule.name = "warmup_cosine"
    config.schedule.warmup_epochs = 1.0
    config.checkpoint.keep = 2
    config.log_every = 5
    return config
