"""The PyTorch peer of bench/input_pipeline.py: `torch.utils.data.DataLoader` over image
files with `torchvision.transforms.v2` on PIL images (torchvision's ImageFolder recipe),
uint8 tensors out. Runs in the torch environment and takes one JSON command per stdin line
({"case", "files", "batch", "workers", "seed"}), answering one JSON line each, so the
jaxcnn side can interleave its rounds with this one's.

    /work/torchvenv/bin/python bench/torch_input_peer.py   # driven by bench/input_pipeline.py
"""

from __future__ import annotations

import json
import sys
import time

from tree_cpu import tree_cpu


def transform(case: str):
    """The case's transform: (a) RandomCrop(32, padding 4) + flip, (b) RandomResizedCrop(224)
    + flip, (c) Resize(256) + CenterCrop(224); each ends with PILToTensor (uint8)."""
    from torchvision.transforms import v2

    ops = {
        "a": [v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip()],
        "b": [v2.RandomResizedCrop(224), v2.RandomHorizontalFlip()],
        "c": [v2.Resize(256), v2.CenterCrop(224)],
    }[case]
    return v2.Compose([*ops, v2.PILToTensor()])


class Files:
    """Image files and labels, read as torchvision's `pil_loader` does."""

    def __init__(self, files, t):
        self.files, self.t = files, t

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        from PIL import Image

        path, label = self.files[i]
        with open(path, "rb") as f:
            img = Image.open(f).convert("RGB")
        return self.t(img), label


def run(cmd: dict) -> dict:
    """One timed pass: start-up to the first batch, then steady-state images/s."""
    import torch
    from torch.utils.data import DataLoader

    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(cmd["seed"])
    loader = DataLoader(Files(cmd["files"], transform(cmd["case"])), batch_size=cmd["batch"],
                        shuffle=True, generator=g, num_workers=cmd["workers"], drop_last=True)
    t0 = time.perf_counter()
    n, t_first = 0, None
    last = len(loader) - 1
    for k, (images, _) in enumerate(loader):
        if t_first is None:
            t_first, cpu0 = time.perf_counter(), tree_cpu()
            shape = list(images.shape)
        else:
            n += len(images)
        if k == last:  # before the workers exit
            t_end, cpu1 = time.perf_counter(), tree_cpu()
    return {"startup_s": t_first - t0, "steady_images": n,
            "images_per_s": n / (t_end - t_first), "shape": shape,
            "cpu_ms_per_image": (cpu1 - cpu0) / n * 1e3}



def main() -> None:
    import torch
    import torchvision

    print(json.dumps({"ready": True, "torch": torch.__version__,
                      "torchvision": torchvision.__version__}), flush=True)
    for line in sys.stdin:
        print(json.dumps(run(json.loads(line))), flush=True)


if __name__ == "__main__":
    main()
