"""The torchvision side of bench/fasterrcnn_raccoon.py, run in the torch venv and driven over
stdin/stdout (one JSON command per line, one JSON answer per line), so that the two libraries
train epoch by epoch in turn on the same machine:

  {"cmd": "init", ...}   build FasterRCNN(resnet_fpn_backbone("resnet18")), save its initial
                         state_dict (the jaxcnn side converts the same weights)
  {"cmd": "epoch", ...}  one epoch over the given image order with the given learning rates
  {"cmd": "eval", ...}   detections of the test images (eval mode), timed

The data (uint8 images, padded boxes) come from the jaxcnn side as an .npz file.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import torch
from safetensors.torch import save_file
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone


def _tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1).float().div(255.0)


class Peer:
    def init(self, msg: dict) -> dict:
        torch.set_num_threads(msg["threads"])
        torch.manual_seed(msg["seed"])
        norm = torch.nn.BatchNorm2d if msg["norm"] == "batch" else None
        extra = {"norm_layer": norm} if norm else {}
        backbone = resnet_fpn_backbone(backbone_name="resnet18", weights=None,
                                       trainable_layers=msg["trainable_layers"], **extra)
        self.model = FasterRCNN(backbone, num_classes=msg["num_classes"], **msg["kwargs"])
        save_file({k: v.contiguous() for k, v in self.model.state_dict().items()},
                  msg["state_file"])
        data = np.load(msg["data"])
        self.data = {k: data[k] for k in data.files}
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.SGD(params, lr=0.0, momentum=msg["momentum"],
                                   weight_decay=msg["weight_decay"])
        self.rng = np.random.default_rng(msg["seed"])
        return {"torch": torch.__version__, "params": sum(p.numel() for p in params)}

    def epoch(self, msg: dict) -> dict:
        d, model = self.data, self.model
        model.train()
        t0 = time.perf_counter()
        losses = []
        for batch, lr in zip(msg["batches"], msg["lrs"], strict=True):
            images, targets = [], []
            for i in batch:
                img, boxes = d["train_image"][i], d["train_boxes"][i][d["train_mask"][i]]
                labels = d["train_labels"][i][d["train_mask"][i]] + 1
                if self.rng.random() < 0.5:  # RandomHorizontalFlip(0.5), boxes with it
                    img = img[:, ::-1]
                    w = img.shape[1]
                    boxes = np.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]],
                                     axis=1)  # fmt: skip
                images.append(_tensor(np.ascontiguousarray(img)))
                targets.append({"boxes": torch.from_numpy(boxes.astype(np.float32)),
                                "labels": torch.from_numpy(labels.astype(np.int64))})  # fmt: skip
            for group in self.opt.param_groups:
                group["lr"] = lr
            loss = sum(model(images, targets).values())
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
            losses.append(float(loss))
        return {"seconds": time.perf_counter() - t0, "loss": float(np.mean(losses))}

    def eval(self, msg: dict) -> dict:
        d, model = self.data, self.model
        model.eval()
        out, seconds = {}, []
        for _ in range(msg["passes"]):
            t0 = time.perf_counter()
            dets = []
            with torch.no_grad():
                for start in range(0, len(d["test_image"]), msg["batch_size"]):
                    chunk = d["test_image"][start : start + msg["batch_size"]]
                    dets += model([_tensor(x) for x in chunk])
            seconds.append(time.perf_counter() - t0)
        for i, det in enumerate(dets):
            for k, v in det.items():
                out[f"{i}/{k}"] = v.numpy()
        np.savez(msg["out"], **out)
        return {"seconds": seconds}


def main() -> None:
    peer = Peer()
    for line in sys.stdin:
        msg = json.loads(line)
        answer = getattr(peer, msg["cmd"])(msg)
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
