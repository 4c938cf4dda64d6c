"""The reliability tests' training run: configs/smoke.py (256 digits, batch 32, 8 steps per
epoch, 2 epochs, a checkpoint every 3 steps) with a small_cnn of width 4 instead of LeNet-5, so
that an exact resume must also restore BatchNorm statistics and the augmentation rng (random
crop and flip on). No dropout: its random masks alone triple the CPU compile time (~50 s)."""

from configs import smoke


def get_config():
    """The smoke config with BatchNorm and random augmentation."""
    config = smoke.get_config()
    config.progress = False
    config.model.name = "small_cnn"
    config.model.kwargs.width = 4
    config.data.crop_padding = 2
    config.data.flip = True
    config.checkpoint.keep = 20  # keep every checkpoint, so tests can see what was saved
    return config
