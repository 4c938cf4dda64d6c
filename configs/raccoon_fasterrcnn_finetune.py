"""Fine-tune torchvision's COCO Faster R-CNN ResNet-50-FPN on the raccoon photos: every weight
from the COCO_V1 checkpoint except a new 2-class predictor (background + raccoon), frozen
BatchNorm, conv1 and layer1 frozen (trainable_backbone_layers=3), torchvision's 800 / 1333
resize replaced by 512 x 512. Needs the published weights: downloaded on first use, or
offline an OfflineError naming the URL and where to put the file (or
--config.init.extra.file=PATH to a local .pth / .safetensors / `jaxcnn convert` directory).

    python train.py --config configs/raccoon_fasterrcnn_finetune.py --workdir runs/raccoon_ft \\
        --config.data.path=data/raccoon
"""

from . import raccoon_fasterrcnn

SIZE = 512


def get_config():
    """The from-scratch recipe with COCO weights: lr 0.005, 6 epochs."""
    config = raccoon_fasterrcnn.get_config()
    config.data.image_size = SIZE
    config.data.batch_size = 2
    config.model.name = "fasterrcnn_resnet50_fpn"
    config.model.kwargs.min_size = SIZE
    config.model.kwargs.max_size = SIZE
    config.model.kwargs.fixed_size = (SIZE, SIZE)
    config.model.kwargs.trainable_backbone_layers = 3
    config.model.kwargs.norm = "frozen"
    config.model.kwargs.norm_eps = 0.0  # torchvision's COCO_V1 model (overwrite_eps(model, 0))
    config.init.path = "torchvision:fasterrcnn_resnet50_fpn"
    config.init.extra.weights = "COCO_V1"
    config.init.reinit_head = True  # the 91-class predictor becomes a fresh 2-class one
    config.num_epochs = 6
    config.optimizer.lr = 0.005
    config.schedule.warmup_epochs = 0.5
    return config
