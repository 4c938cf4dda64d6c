"""The physical limits a measured images/s is read against: FLOPs and HBM bytes per image of
a registered model's training step, counted layer by layer from its shapes (no device
needed), and the roofline bound they give on a GPU.

    python bench/roofline.py --model resnet50 --size 224 --device H200

Counting rules (stated, so the bound can be checked): a convolution or dense layer costs
2 * MACs FLOPs forward and 2x that backward (input and weight gradients), so training is
3x forward. Bytes: each activation tensor (bf16, 2 bytes) of a conv -> BatchNorm -> ReLU
layer is touched at least 5 times forward (the conv writes it; BatchNorm reads it for the
batch statistics, reads it again and writes the normalized, activated result; the next layer
reads that) and at least 10 times backward (the same reads and writes for the gradient,
plus re-reading the saved forward tensors), i.e. 15 passes of 2 bytes per element: a lower
bound for unfused BatchNorm, which XLA and cuDNN cannot fuse into the convolution because
the statistics are over the whole batch. Weights (25.6 M for ResNet-50) are read and
written a few times per step and amortized over the batch: negligible at batch 256."""

from __future__ import annotations

import argparse
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# Dense bf16 tensor-core peak (TFLOP/s) and HBM bandwidth (TB/s), vendors' data sheets (SXM).
DEVICES = {"H200": (989.0, 4.8), "H100": (989.0, 3.35), "A100": (312.0, 2.04)}
PASSES_FORWARD, PASSES_BACKWARD, BYTES = 5, 10, 2


def count(model_name: str, size: int) -> dict:
    """Per-image forward MACs of convolutions and dense layers and activation elements of
    their outputs, from one traced forward pass (jax.eval_shape: nothing is computed)."""
    import jaxcnn

    model = jaxcnn.create_model(model_name)
    macs, acts = [0], [0]

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        mod = context.module
        if context.method_name == "__call__" and isinstance(mod, nn.Conv | nn.Dense):
            kernel = mod.variables["params"]["kernel"]
            fan_in = int(np.prod(kernel.shape[:-1]))
            macs[0] += int(np.prod(out.shape[1:])) * fan_in
            acts[0] += int(np.prod(out.shape[1:]))
        return out

    x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)

    def forward(x):
        variables = model.init(jax.random.PRNGKey(0), x, train=False)
        with nn.intercept_methods(interceptor):
            return model.apply(variables, x, train=False)

    jax.eval_shape(forward, x)  # init runs outside the interceptor: only apply is counted
    return {"macs": macs[0], "activations": acts[0]}


def roofline(model_name: str, size: int, device: str) -> dict:
    """FLOPs and bytes per training image and the images/s bound on `device`."""
    c = count(model_name, size)
    flops = 3 * 2 * c["macs"]
    nbytes = (PASSES_FORWARD + PASSES_BACKWARD) * BYTES * c["activations"]
    peak, bw = DEVICES[device]
    compute_bound = peak * 1e12 / flops
    memory_bound = bw * 1e12 / nbytes
    return {
        "model": model_name, "size": size, "device": device,
        "forward_gmacs": round(c["macs"] / 1e9, 3),
        "train_gflop_per_image": round(flops / 1e9, 2),
        "activation_melements_per_image": round(c["activations"] / 1e6, 2),
        "train_mbytes_per_image": round(nbytes / 1e6, 1),
        "arithmetic_intensity_flop_per_byte": round(flops / nbytes, 1),
        "ridge_point_flop_per_byte": round(peak / bw, 1),
        "compute_bound_images_per_s": round(compute_bound),
        "memory_bound_images_per_s": round(memory_bound),
        "roofline_images_per_s": round(min(compute_bound, memory_bound)),
        "inference_compute_bound_images_per_s": round(peak * 1e12 / (2 * c["macs"])),
        "inference_memory_bound_images_per_s": round(
            bw * 1e12 / ((PASSES_FORWARD - 1) * BYTES * c["activations"])),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet50")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--device", default="H200", choices=sorted(DEVICES))
    args = p.parse_args(argv)
    print(json.dumps(roofline(args.model, args.size, args.device)))


if __name__ == "__main__":
    main()
