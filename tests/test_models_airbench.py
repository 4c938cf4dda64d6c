"""airbench94's network against airbench 0.1.8's source (lib_airbench94.py `make_net94`,
utils.py `init_whitening_conv`), the formulas transcribed here in numpy: parameter count,
layer sizes, identity (dirac) initialisation, BatchNorm without scale (momentum 0.6 in flax
terms, eps 1e-12), exact GELU, the 1/9 output scale, and the patch-whitening kernel."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from model_testing import fast_jit, numpy_variables

import jaxcnn
from jaxcnn.errors import InputError
from jaxcnn.models import abstract_variables, count_params
from jaxcnn.models.airbench import (
    _tiny_airbench,
    dirac_kernel_init,
    init_whitening,
    whitening_kernel,
)
from jaxcnn.models.layers import match_groups


def test_airbench94_param_count_matches_make_net94():
    # make_net94: whiten conv 3->24 (2x2, bias); per block conv(in, w) + conv(w, w), BN biases
    # (BN weights are frozen at 1 there and absent here); Linear(256, 10, bias=False).
    widths, cin, total = (64, 256, 256), 24, 3 * 24 * 4 + 24
    for w in widths:
        total += 9 * (cin * w + w * w) + 2 * w
        cin = w
    total += 256 * 10
    model = jaxcnn.create_model("airbench94")
    variables = abstract_variables(model, (32, 32, 3))
    assert count_params(variables) == total == 1_971_640
    norms = variables["params"]["block1"]["norm1"]
    assert set(norms) == {"bias"}  # no learned scale (BatchNorm(weight=False))
    assert "bias" not in variables["params"]["fc"]


def test_block_outputs_follow_make_net94_sizes():
    model = jaxcnn.create_model("airbench94")
    variables = abstract_variables(model, (32, 32, 3))
    x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
    feats = jax.eval_shape(lambda v, x: model.apply(v, x, method=model.features), variables, x)
    # 32 -> 31 (2x2 valid) -> pool 15 -> 7 -> 3 -> maxpool(3) 1
    assert feats["block1"].shape == (2, 15, 15, 64)
    assert feats["block2"].shape == (2, 7, 7, 256)
    assert feats["block3"].shape == (2, 3, 3, 256)
    assert feats["pre_logits"].shape == (2, 256)
    assert feats["logits"].shape == (2, 10)


@pytest.mark.parametrize("size", [24, 49])
def test_sizes_without_a_1x1_final_map_are_rejected(size):
    model = jaxcnn.create_model("airbench94")
    variables = abstract_variables(model, (32, 32, 3))
    x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    with pytest.raises(InputError, match="25 to 48 pixels|at least 25x25"):
        jax.eval_shape(lambda v, x: model.apply(v, x), variables, x)


def _constant_base(key, shape, dtype=jnp.float32):
    return jnp.full(shape, 0.5, dtype)  # cheap stand-in for the random base init


@pytest.mark.parametrize("cin,cout", [(4, 4), (3, 8), (8, 3)])
def test_dirac_init_keeps_the_first_filters_identity_like_torch_dirac(cin, cout):
    kernel = np.asarray(dirac_kernel_init(_constant_base)(None, (3, 3, cin, cout)))
    n = min(cin, cout)
    # torch.nn.init.dirac_(w[:in]): w[d, d, 1, 1] = 1, everything else in those filters 0.
    expected = np.zeros((3, 3, cin, n), np.float32)
    expected[1, 1, np.arange(n), np.arange(n)] = 1
    np.testing.assert_array_equal(kernel[..., :n], expected)
    np.testing.assert_array_equal(kernel[..., n:], 0.5)  # the other filters keep the base init


def test_dirac_init_base_is_torch_default_conv_init():
    kernel = np.asarray(dirac_kernel_init()(jax.random.PRNGKey(0), (3, 3, 3, 64)))
    rest = kernel[..., 3:]
    bound = 1 / np.sqrt(9 * 3)  # PyTorch's default kaiming_uniform_(a=sqrt(5))
    assert np.all(np.abs(rest) <= bound) and np.std(rest) > bound / 2


def test_fresh_block_conv2_is_the_identity_map():
    x = np.random.default_rng(0).normal(size=(2, 5, 5, 6)).astype(np.float32)
    kernel = dirac_kernel_init(_constant_base)(None, (3, 3, 6, 6))
    y = jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(y, x, atol=1e-6)


def _airbench_whitening_reference(images_nhwc, kh=2, kw=2, eps=5e-4):
    """utils.py lines 172-187, transcribed to numpy: OIHW weights [2*c*h*w, c, h, w]."""
    x = images_nhwc.transpose(0, 3, 1, 2).astype(np.float64)  # NCHW
    n, c, h, w = x.shape
    # x.unfold(2,kh,1).unfold(3,kw,1).transpose(1,3).reshape(-1,c,kh,kw)
    patches = np.stack([x[:, :, i:i + h - kh + 1, j:j + w - kw + 1]
                        for i in range(kh) for j in range(kw)], -1)  # N C H' W' (kh kw)
    patches = patches.reshape(n, c, h - kh + 1, w - kw + 1, kh, kw)
    patches = patches.transpose(0, 3, 2, 1, 4, 5).reshape(-1, c, kh, kw)
    flat = patches.reshape(len(patches), -1)
    cov = flat.T @ flat / len(flat)
    eigenvalues, eigenvectors = np.linalg.eigh(cov)
    eigenvalues = eigenvalues[::-1].reshape(-1, 1, 1, 1)
    eigenvectors = eigenvectors.T.reshape(c * kh * kw, c, kh, kw)[::-1]
    scaled = eigenvectors / np.sqrt(eigenvalues + eps)
    return np.concatenate([scaled, -scaled])


def _correlated_images(n=40, size=8, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, size + 1, size + 1, 3))
    smooth = base[:, 1:, 1:] + 0.7 * base[:, :-1, 1:] + 0.4 * base[:, 1:, :-1]
    mix = np.array([[1.0, 0.5, 0.2], [0.0, 1.0, 0.3], [0.1, 0.0, 0.8]])
    return (smooth @ mix).astype(np.float32)


def test_whitening_kernel_matches_airbench_init_whitening_conv():
    images = _correlated_images()
    ours = np.asarray(whitening_kernel(images))  # HWIO [2, 2, 3, 24]
    ref = _airbench_whitening_reference(images).transpose(2, 3, 1, 0)  # OIHW -> HWIO
    assert ours.shape == ref.shape == (2, 2, 3, 24)
    # Eigenvectors are defined up to sign: compare each filter with the reference's sign.
    flat_o, flat_r = ours.reshape(-1, 24), ref.reshape(-1, 24)
    signs = np.sign(np.sum(flat_o * flat_r, axis=0))
    np.testing.assert_allclose(flat_o * signs, flat_r, rtol=2e-3, atol=2e-3)
    np.testing.assert_array_equal(ours[..., 12:], -ours[..., :12])


def test_whitened_patches_are_decorrelated_with_variance_l_over_l_plus_eps():
    images = _correlated_images(n=60, seed=1)
    kernel = whitening_kernel(images, eps=5e-4)
    out = jax.lax.conv_general_dilated(images, kernel, (1, 1), "VALID",
                                       dimension_numbers=("NHWC", "HWIO", "NHWC"))
    flat = np.asarray(out[..., :12], np.float64).reshape(-1, 12)
    cov = flat.T @ flat / len(flat)
    np.testing.assert_allclose(cov - np.diag(np.diag(cov)), 0, atol=1e-3)
    assert np.all(np.diag(cov) > 0.8) and np.all(np.diag(cov) <= 1.0 + 1e-3)
    assert np.all(np.diff(np.diag(cov)) <= 1e-3)  # eigenvalues descending: variance too


def test_init_whitening_replaces_only_the_whitening_kernel():
    model = _tiny_airbench()
    variables = numpy_variables(model, jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32))
    images = _correlated_images(n=10, size=32)
    out = init_whitening(variables, images)
    np.testing.assert_allclose(out["params"]["whiten"]["kernel"], whitening_kernel(images))
    same = jax.tree.map(np.array_equal, out["params"]["block1"], variables["params"]["block1"])
    assert all(jax.tree.leaves(same))
    with pytest.raises(InputError, match="channel"):
        init_whitening(variables, images[..., :1])


def test_batchnorm_gelu_and_output_scale_follow_make_net94():
    model = _tiny_airbench(num_classes=3)
    x = jnp.asarray(_correlated_images(n=4, size=32, seed=2))
    variables = numpy_variables(model, jax.ShapeDtypeStruct(x.shape, x.dtype))

    @fast_jit
    def run(variables, x):
        feats, updates = model.apply(variables, x, train=True, method=model.features,
                                     mutable=["batch_stats"], capture_intermediates=True)
        return feats, updates

    feats, updates = run(variables, x)
    # Output: Linear without bias, then Mul(1/9).
    w = variables["params"]["fc"]["kernel"]
    np.testing.assert_allclose(feats["logits"], feats["pre_logits"] @ w / 9, rtol=1e-5, atol=1e-6)
    # BatchNorm running mean: torch momentum 0.4 -> 0.6 * old (0) + 0.4 * batch mean.
    conv1 = updates["intermediates"]["block1"]["conv1"]["__call__"][0]
    pooled = jax.lax.reduce_window(conv1, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1),
                                   "VALID")
    np.testing.assert_allclose(updates["batch_stats"]["block1"]["norm1"]["mean"],
                               0.4 * np.mean(pooled, axis=(0, 1, 2)), rtol=1e-4, atol=1e-6)
    # Block output = exact GELU(BN(conv2)) with unit scale, eps 1e-12.
    conv2 = np.asarray(updates["intermediates"]["block1"]["conv2"]["__call__"][0])
    mean, var = np.mean(conv2, axis=(0, 1, 2)), np.var(conv2, axis=(0, 1, 2))
    bias = variables["params"]["block1"]["norm2"]["bias"]
    normed = (conv2 - mean) / np.sqrt(var + 1e-12) + bias
    expected = jax.nn.gelu(jnp.asarray(normed), approximate=False)
    np.testing.assert_allclose(feats["block1"], expected, rtol=1e-4, atol=1e-4)


def test_groups_cover_every_module_in_network_order_head_last():
    model = jaxcnn.create_model("airbench94")
    params = abstract_variables(model, (32, 32, 3))["params"]
    groups = match_groups(model.group_matcher(), list(params))
    assert [g for g, _ in groups] == ["whiten", "block1", "block2", "block3", "head"]
    assert groups[-1][1] == [model.head_name]
