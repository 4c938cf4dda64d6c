"""Write the torch numbers that jaxcnn's BatchNorm must reproduce, running statistics
included (tests/test_models_batchnorm.py). Needs torch + torchvision, not jaxcnn:

    /work/torchvenv/bin/python tests/golden/bn/make_bn_golden.py   # rewrites bn_torch.npz

- "lesson": the course's 4x3 batch through `nn.BatchNorm1d(3)` for one training step.
- "conv{N}": `nn.BatchNorm2d(3)` (gamma, beta drawn) on an N x 3 x 5 x 4 batch, three
  training steps, then eval: outputs and running statistics after each step (N = 1, 2, 7).
- "global": the same on a batch of 8 (the data-parallel test shards it over 4 devices).
- "resnet18": torchvision's resnet18 with `jaxcnn.pretrained.synthetic` weights fine-tuned
  for 3 SGD steps (lr 0.002, cross-entropy) on 4 x 3 x 64 x 64 batches; every BatchNorm's
  running_mean / running_var afterwards, and the logits of each step.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
import torchvision

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location(
    "synthetic", HERE.parents[2] / "jaxcnn" / "pretrained" / "synthetic.py"
)
synthetic = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(synthetic)

# The course's batch (4 examples x 3 features); see tests/test_models_batchnorm.py for how it
# was reconstructed from the lecture's printed statistics.
LESSON = np.array([[2, 1, 0], [4, 3, 4], [0, 2, 1], [3, 4, 0]], np.float32)
CONV_BATCHES = (1, 2, 7, 8)
STEPS = 3
FINETUNE_LR = 0.002
FINETUNE_BATCH = (4, 3, 64, 64)


def conv_inputs(n: int) -> list[np.ndarray]:
    """The NCHW batches of the conv cases (the test rebuilds them with the same seeds)."""
    rng = np.random.default_rng(n)
    return [(rng.standard_normal((n, 5, 4, 3)) * 2 + 1).astype(np.float32).transpose(0, 3, 1, 2)
            for _ in range(STEPS)]


def conv_affine() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(99)
    return (rng.uniform(0.5, 1.5, 3).astype(np.float32),
            rng.standard_normal(3).astype(np.float32))


def finetune_batch(step: int) -> tuple[np.ndarray, np.ndarray]:
    x = synthetic.synthetic_input(100 + step, FINETUNE_BATCH)
    labels = (np.arange(FINETUNE_BATCH[0]) * 37 + step * 11) % 1000
    return x, labels.astype(np.int64)


def main() -> None:
    torch.manual_seed(0)
    out: dict[str, np.ndarray] = {}
    bn = torch.nn.BatchNorm1d(3)
    bn.train()
    out["lesson/y"] = bn(torch.from_numpy(LESSON)).detach().numpy()
    out["lesson/running_mean"] = bn.running_mean.numpy().copy()
    out["lesson/running_var"] = bn.running_var.numpy().copy()

    gamma, beta = conv_affine()
    for n in CONV_BATCHES:
        bn = torch.nn.BatchNorm2d(3)
        with torch.no_grad():
            bn.weight.copy_(torch.from_numpy(gamma))
            bn.bias.copy_(torch.from_numpy(beta))
        for step, x in enumerate(conv_inputs(n)):
            bn.train()
            y = bn(torch.from_numpy(x)).detach().numpy()
            out[f"conv{n}/{step}/y"] = y.transpose(0, 2, 3, 1)
            out[f"conv{n}/{step}/running_mean"] = bn.running_mean.numpy().copy()
            out[f"conv{n}/{step}/running_var"] = bn.running_var.numpy().copy()
        bn.eval()
        out[f"conv{n}/eval_y"] = bn(torch.from_numpy(x)).detach().numpy().transpose(0, 2, 3, 1)

    model = torchvision.models.resnet18(weights=None)
    keys = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    state = synthetic.synthetic_state_dict(keys)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=FINETUNE_LR)
    for step in range(STEPS):
        x, labels = finetune_batch(step)
        logits = model(torch.from_numpy(x))
        loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(labels))
        opt.zero_grad()
        loss.backward()
        opt.step()
        out[f"resnet18/{step}/logits"] = logits.detach().numpy()
    for k, v in model.state_dict().items():
        if k.endswith(("running_mean", "running_var")):
            out[f"resnet18/state/{k}"] = v.numpy().copy()
    np.savez_compressed(HERE / "bn_torch.npz", **out)
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}: wrote "
          f"{HERE / 'bn_torch.npz'} ({len(out)} arrays)")


if __name__ == "__main__":
    main()
