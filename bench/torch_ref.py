"""The PyTorch peer for bench/throughput.py: torchvision's model, same batch, bf16 autocast,
channels_last, eager and torch.compile, train and inference images/s on synthetic data.

    python bench/torch_ref.py --model resnet50 --batch 256 --size 224 --modes eager,compile

Prints one JSON line per (mode, phase): compile/warm-up time and steady-state images/s, timed
with CUDA events after warm-up (never the first, compiling calls)."""

from __future__ import annotations

import argparse
import json
import platform
import time


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet50")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--modes", default="eager,compile", help="comma list of eager,compile")
    p.add_argument("--phases", default="train,inference")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--device", default=None, help="default: cuda if available else cpu")
    p.add_argument("--compile-backend", default="inductor",
                   help="torch.compile backend (a CPU smoke test uses 'eager': graph capture "
                   "without Inductor's minutes of C++ code generation)")
    return p.parse_args()


def _sync(torch, device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _device_name(torch, device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name()
    return f"cpu ({platform.machine()})"


def measure(args: argparse.Namespace, mode: str, phase: str) -> dict:
    """Images/s of one (mode, phase) with compile/warm-up timed separately."""
    import torch
    import torchvision

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = True
    model = torchvision.models.get_model(args.model, weights=None, num_classes=args.num_classes)
    model = model.to(device).to(memory_format=torch.channels_last)
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    x = x.to(memory_format=torch.channels_last)
    y = torch.randint(0, args.num_classes, (args.batch,), device=device)
    autocast_dtype = torch.bfloat16
    if phase == "train":
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-5)

        def step():
            with torch.autocast(device_type=device.split(":")[0], dtype=autocast_dtype):
                loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    else:
        model.eval()

        @torch.no_grad()
        def step():
            with torch.autocast(device_type=device.split(":")[0], dtype=autocast_dtype):
                model(x)

    fn = torch.compile(step, backend=args.compile_backend) if mode == "compile" else step
    start = time.perf_counter()
    fn()
    _sync(torch, device)
    first_call = time.perf_counter() - start
    for _ in range(args.warmup):
        fn()
    _sync(torch, device)
    start = time.perf_counter()
    for _ in range(args.steps):
        fn()
    _sync(torch, device)
    elapsed = time.perf_counter() - start
    return {
        "framework": "torch",
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "device": _device_name(torch, device),
        "model": args.model,
        "mode": mode,
        "compile_backend": args.compile_backend if mode == "compile" else None,
        "phase": phase,
        "batch": args.batch,
        "size": args.size,
        "dtype": "bf16-autocast",
        "first_call_seconds": round(first_call, 3),
        "steps": args.steps,
        "images_per_second": round(args.batch * args.steps / elapsed, 1),
    }


def main() -> None:
    args = _parse()
    for mode in args.modes.split(","):
        for phase in args.phases.split(","):
            print(json.dumps(measure(args, mode, phase)), flush=True)


if __name__ == "__main__":
    main()
