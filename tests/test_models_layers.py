"""Shared layers against PyTorch: every expected array below was computed once with
torch 2.14 (`F.adaptive_avg_pool2d`, `F.max_pool2d(ceil_mode=True)`,
`nn.LocalResponseNorm`) on the same inputs, transposed to NHWC, and pasted as literals, so
these tests need no torch."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn.models.layers import LocalResponseNorm, adaptive_avg_pool, max_pool


def test_adaptive_avg_pool_matches_torch_when_sizes_do_not_divide():
    x = jnp.arange(5 * 7 * 2, dtype=jnp.float32).reshape(1, 5, 7, 2)
    expected = [
        [[8, 9], [11, 12], [15, 16], [18, 19]],
        [[29, 30], [32, 33], [36, 37], [39, 40]],
        [[50, 51], [53, 54], [57, 58], [60, 61]],
    ]
    np.testing.assert_allclose(adaptive_avg_pool(x, (3, 4))[0], expected, rtol=1e-6)


def test_adaptive_avg_pool_matches_torch_when_output_is_larger_than_input():
    x = jnp.arange(3 * 5, dtype=jnp.float32).reshape(1, 3, 5, 1)
    expected = [[1.0, 3.0], [3.5, 5.5], [8.5, 10.5], [11.0, 13.0]]
    np.testing.assert_allclose(adaptive_avg_pool(x, (4, 2))[0, :, :, 0], expected, rtol=1e-6)


def test_adaptive_avg_pool_to_4x4_is_not_avg_pool_5x5_stride_3():
    """GoogLeNet's aux heads: torchvision's adaptive 4x4 pool on 14x14 averages 4x4 windows
    (the paper's avg-pool 5x5/3 would average 5x5): first cell 22.5 in torch, not 30."""
    x = jnp.arange(14 * 14, dtype=jnp.float32).reshape(1, 14, 14, 1)
    np.testing.assert_allclose(
        adaptive_avg_pool(x, (4, 4))[0, 0, :, 0], [22.5, 25.5, 29.5, 32.5], rtol=1e-6
    )


MAX_POOL_CASES = {
    # (size, window, stride, padding): torch's output with ceil_mode=True
    (6, 3, 2, 0): [[94, 94, 87], [97, 90, 87], [100, 90, 83]],  # floor mode would give 2x2
    (8, 3, 2, 0): [[94, 97, 84, 57], [87, 97, 100, 100], [96, 83, 93, 93], [96, 99, 99, 79]],
    # ceil rule: a window starting in the right padding is dropped (4 -> 3)
    (5, 2, 2, 1): [[0, 74, 47], [84, 57, 94], [50, 87, 97]],
    # GoogLeNet's branch4 pool
    (7, 3, 1, 1): [
        [94, 94, 94, 74, 84, 84, 84],
        [94, 94, 94, 87, 97, 97, 97],
        [94, 94, 94, 87, 97, 97, 97],
        [70, 100, 100, 100, 97, 97, 97],
        [83, 100, 100, 100, 93, 90, 90],
        [83, 100, 100, 100, 93, 86, 66],
        [83, 83, 93, 93, 93, 86, 66],
    ],
}


@pytest.mark.parametrize("case", sorted(MAX_POOL_CASES))
def test_max_pool_ceil_mode_matches_torch(case):
    size, window, stride, padding = case
    x = ((jnp.arange(size * size, dtype=jnp.float32) * 37) % 101).reshape(1, size, size, 1)
    y = max_pool(x, window, stride, padding=padding, ceil_mode=True)
    np.testing.assert_array_equal(y[0, :, :, 0], MAX_POOL_CASES[case])


LRN_CASES = {
    # (size, alpha, beta, k): torch.nn.LocalResponseNorm output
    (5, 1e-4, 0.75, 2.0): [  # AlexNet's setting
        [-11.813744, -10.03266, -8.2582655, -6.506752, -4.742254, -2.968255, -1.1883785],
        [0.59430945, 2.3754575, 4.151798, 5.9198594, 7.6760807, 9.450925, 11.231324],
    ],
    (4, 0.5, 0.75, 1.0): [  # even size: torch pads size//2 before, (size-1)//2 after
        [-0.7013308, -0.4950258, -0.37060994, -0.39381105, -0.41462666, -0.41354498, -0.29861146],
        [0.42546368, 0.75414294, 0.6950301, 0.5981332, 0.5218775, 0.4655157, 0.60423476],
    ],
}


@pytest.mark.parametrize("case", sorted(LRN_CASES))
def test_local_response_norm_matches_torch(case):
    size, alpha, beta, k = case
    x = (jnp.arange(14, dtype=jnp.float32) * 3 - 20).reshape(1, 1, 2, 7)  # 7 channels
    lrn = LocalResponseNorm(size=size, alpha=alpha, beta=beta, k=k)
    y = lrn.apply({}, x)
    np.testing.assert_allclose(y[0, 0], LRN_CASES[case], rtol=1e-6, atol=1e-6)
