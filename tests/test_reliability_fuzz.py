"""Property-based fuzz of the public API a new user touches first: similarity metrics,
pairwise/top-k search, create_model options, config validation, the image reader, weight
files and damaged similarity indexes. Every call must either give an answer that an
independent oracle (numpy in float64, the issue's rules) accepts, or raise a jaxcnn error
with a message. Anything else is counted as "unclear" (another exception) or "silent" (a
wrong answer) and fails the test.

Profiles (tests/test_reliability_property.py): "dev" (12 examples per property), "ci"
(CI=true: 30, derandomized) and "fuzz-long" (HYPOTHESIS_PROFILE=fuzz-long: 400, derandomized,
for the issue note). With JAXCNN_FUZZ_REPORT=FILE the counts are written there as JSON."""

from __future__ import annotations

import collections
import io
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import jax
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

settings.register_profile("fuzz-long", max_examples=400, deadline=None, derandomize=True,
                          suppress_health_check=list(HealthCheck))
import test_reliability_property  # noqa: E402,F401  (registers and loads dev / ci profiles)

from jaxcnn.errors import JaxcnnError  # noqa: E402

LONG = settings.default.max_examples >= 400


def budget(n: int) -> settings:
    """At most `n` examples in the default suite (compiles dominate), the whole profile in
    fuzz-long."""
    return settings(max_examples=settings.default.max_examples if LONG else
                    min(n, settings.default.max_examples))

TALLY: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)


class Silent(AssertionError):
    """An answer the oracle rejects."""


def attempt(prop: str, call, oracle=None, *, must_raise: str = ""):
    """Run `call`: a JaxcnnError with a message counts as clear, any other exception as
    unclear (re-raised), an answer `oracle` rejects (or any answer when `must_raise` says why
    an error was due) as silent. Returns (result, error)."""
    TALLY[prop]["tried"] += 1
    try:
        result = call()
    except JaxcnnError as err:
        if not str(err).strip():
            TALLY[prop]["unclear"] += 1
            raise AssertionError(f"{type(err).__name__} without a message") from err
        TALLY[prop]["clear"] += 1
        return None, err
    except Exception as err:
        TALLY[prop]["unclear"] += 1
        raise AssertionError(f"unclear error {type(err).__name__}: {err}") from err
    problem = f"no error although {must_raise}" if must_raise else (oracle and oracle(result))
    if problem:
        TALLY[prop]["silent"] += 1
        raise Silent(problem)
    TALLY[prop]["answered"] += 1
    return result, None


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    total = collections.Counter()
    for c in TALLY.values():
        total.update(c)
    summary = {"properties": {k: dict(v) for k, v in sorted(TALLY.items())}, "total": dict(total)}
    if os.environ.get("JAXCNN_FUZZ_REPORT"):
        Path(os.environ["JAXCNN_FUZZ_REPORT"]).write_text(json.dumps(summary, indent=1))
    assert total["unclear"] == 0 and total["silent"] == 0, summary


# ----------------------------------------------------------------------------- arrays


def _f32_exact(v) -> bool:
    try:
        f = float(np.float32(v))
    except (OverflowError, ValueError, TypeError):
        return False
    return math.isfinite(f) and (f == v if isinstance(v, float) else int(f) == int(v))


@st.composite
def vectors(draw, n: int | None = None, dtypes=None):
    """A 1-D array of a dtype a user might hand over, with awkward values."""
    dtype = draw(st.sampled_from(dtypes or ["float32", "float64", "float16", "int64",
                                            "uint64", "int32", "uint8", "bool", "complex64",
                                            "object"]))
    n = n or draw(st.integers(1, 5))
    if dtype == "object":
        return np.array(draw(st.lists(st.sampled_from([1, "a", None, 2.5]), min_size=n,
                                      max_size=n)), dtype=object)
    if dtype == "complex64":
        return (np.arange(n) + 1j).astype(np.complex64)
    if dtype == "bool":
        return np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    if dtype.startswith(("int", "uint")):
        info = np.iinfo(dtype)
        small = st.integers(max(info.min, -300), min(info.max, 300))
        edge = st.sampled_from([int(info.min), int(info.max), 2**24 + 1 if info.max > 2**25
                                else int(info.max), 2**40 if info.max > 2**41 else 0])
        return np.array(draw(st.lists(st.one_of(small, edge), min_size=n, max_size=n)), dtype)
    width = 16 if dtype == "float16" else 32 if dtype == "float32" else 64
    values = st.floats(allow_nan=True, allow_infinity=True, width=width)
    scale = draw(st.sampled_from([1.0, 1e-30, 1e20, 3e38]))
    arr = np.array(draw(st.lists(values, min_size=n, max_size=n)), dtype)
    with np.errstate(all="ignore"):
        return (arr * scale).astype(dtype) if dtype == "float64" else arr


def _expect_error(*arrays) -> str:
    """Why a similarity call must refuse these inputs ("" when it must not)."""
    for a in arrays:
        if a.dtype == object or np.iscomplexobj(a):
            return f"dtype {a.dtype}"
        if a.dtype.kind in "iu" and not all(_f32_exact(int(v)) for v in a.ravel()):
            return "integers float32 cannot hold"
        if a.dtype.kind == "f":
            with np.errstate(all="ignore"):
                f = a.astype(np.float32)
            if not np.isfinite(f).all():
                return "NaN, inf or beyond float32"
    return ""


def _ref(a: np.ndarray, b: np.ndarray, metric: str) -> tuple[float, float]:
    """(float64 reference, tolerance) of one metric; tolerance inf when degenerate."""
    a, b = a.astype(np.float32).astype(np.float64), b.astype(np.float32).astype(np.float64)
    scale = max(np.abs(a).max(), np.abs(b).max(), 1e-300)
    if metric == "l1":
        return np.abs(a - b).sum(), 1e-5 * (np.abs(a).sum() + np.abs(b).sum()) + 1e-30
    if metric == "mse":
        return np.mean((a - b) ** 2), 1e-5 * np.mean(a**2 + b**2) + 1e-30
    if metric == "ncc":
        a, b = a - a.mean(), b - b.mean()
    na, nb = np.linalg.norm(a / scale), np.linalg.norm(b / scale)
    if min(na, nb) < 1e-3:  # near the degenerate rule's threshold: only the range is checked
        return 0.0, math.inf
    return float(np.dot(a / scale, b / scale) / (na * nb)), 2e-3


# ----------------------------------------------------------------------------- metrics


@given(data=st.data(), metric=st.sampled_from(["l1", "mse", "cosine", "ncc"]))
@budget(12)
def test_fuzz_similarity_metrics(data, metric):
    from jaxcnn.similarity import METRICS

    a = data.draw(vectors())
    b = data.draw(vectors(n=a.size)) if data.draw(st.booleans()) else a.copy()
    if data.draw(st.booleans()) and a.size > 1:
        b = b[:-1]  # a shape mismatch
    why = _expect_error(a, b) if a.shape == b.shape else "shapes differ"
    ref = tol = None
    if not why:
        ref, tol = _ref(a, b, metric)
        if ref > 3.5e38:
            why = "the answer exceeds float32"
        elif ref > 3.0e38:
            tol = math.inf  # at float32's edge: an error or a rounded answer are both right

    def oracle(out):
        v = float(out)
        if not math.isfinite(v):
            return f"{metric} = {v}"
        if metric in ("cosine", "ncc") and not -1.0 <= v <= 1.0:
            return f"{metric} = {v} outside [-1, 1]"
        if abs(v - ref) > tol:
            return f"{metric}({a!r}, {b!r}) = {v}, float64 reference {ref} (tolerance {tol})"
        return ""

    attempt("metrics", lambda: METRICS[metric].fn(a, b), oracle, must_raise=why)


# ----------------------------------------------------------------------------- search


@st.composite
def matrices(draw, rows, dim):
    dtype = draw(st.sampled_from(["float32", "float32", "float64", "int64", "bool",
                                  "complex64"]))
    if dtype == "complex64":
        return np.ones((rows, dim), np.complex64)
    if dtype == "bool":
        bits = draw(st.lists(st.booleans(), min_size=rows * dim, max_size=rows * dim))
        return np.array(bits).reshape(rows, dim)
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    scale = draw(st.sampled_from([1.0, 1e-20, 1e18, 2e38]))
    x = rng.standard_normal((rows, dim)) * scale
    if dtype == "int64":
        x = np.round(x / scale * draw(st.sampled_from([3, 2**40, 2**60]))).astype(np.int64)
    else:
        x = x.astype(dtype)
    if draw(st.booleans()):
        x[draw(st.integers(0, rows - 1))] = 0  # a zero (degenerate) row
    if draw(st.integers(0, 5)) == 0 and x.dtype.kind == "f":
        x[draw(st.integers(0, rows - 1)), 0] = draw(st.sampled_from([np.nan, np.inf]))
    return x


@given(data=st.data(), n=st.sampled_from([1, 3]), m=st.sampled_from([2, 5]),
       dim=st.sampled_from([1, 4]), metric=st.sampled_from(["l1", "mse", "cosine", "ncc"]),
       devices=st.sampled_from(["all", "one", "none"]), block=st.sampled_from([None, 1, 2]))
@budget(8)
def test_fuzz_pairwise_and_topk(data, n, m, dim, metric, devices, block):
    from jaxcnn.similarity import pairwise, topk

    x, y = data.draw(matrices(n, dim)), data.draw(matrices(m, dim))
    devs = {"all": None, "one": jax.devices()[:1], "none": []}[devices]
    why = _expect_error(x, y) or ("devices=[]" if devices == "none" else "")
    refs = np.array([[_ref(a, b, metric) for b in y] for a in x]) if not why else None
    if refs is not None:
        if (refs[..., 0] > 3.5e38).any():
            why = "some answers exceed float32"
        refs[..., 1][refs[..., 0] > 3.0e38] = math.inf  # float32's edge: either is right

    def check_pairwise(out):
        if out.shape != (n, m) or out.dtype != np.float32 or not np.isfinite(out).all():
            return f"pairwise gave {out!r}"
        bad = np.abs(out - refs[..., 0]) > refs[..., 1]
        return f"pairwise {out} vs reference {refs[..., 0]}" if bad.any() else ""

    attempt("pairwise", lambda: pairwise(x, y, metric, block_size=block, devices=devs),
            check_pairwise, must_raise=why)
    k = data.draw(st.integers(-1, m + 1))
    why_k = why or ("k out of range" if not 1 <= k <= m else "")

    def check_topk(res):
        scores, idx = map(np.asarray, res)
        if scores.shape != (n, k) or not np.isfinite(scores).all():
            return f"topk gave {scores}"
        higher = metric in ("cosine", "ncc")
        for q in range(n):
            ref = refs[q, :, 0]
            tol = np.where(np.isinf(refs[q, :, 1]), 2.0, refs[q, :, 1]) + 1e-6
            if np.any(np.abs(scores[q] - ref[idx[q]]) > tol[idx[q]]):
                return f"topk scores {scores[q]} are not those of rows {idx[q]} ({ref})"
            rest = np.delete(ref, idx[q])
            worst = scores[q, -1]
            if rest.size and np.isfinite(tol).all() and (
                    (rest > worst + tol.max()).any() if higher else
                    (rest < worst - tol.max()).any()):
                return f"topk missed a better row: {scores[q]} vs the rest {rest}"
        return ""

    attempt("topk", lambda: topk(x, y, k, metric, block_size=block, devices=devs), check_topk,
            must_raise=why_k)


# ----------------------------------------------------------------------------- models

# The rules, written independently of jaxcnn.models.registry.
POSITIVE = {"width", "in_channels", "embedding_dim", "n_filters", "num_filters", "hidden",
            "pool_size", "groups", "width_per_group"}
BOOLS = {"skip", "batch_norm", "aux_logits", "transform_input"}
# The course's activations and initializers by name (issue 14), none of OPTION_VALUES' strings.
ACTIVATIONS = {"relu", "leaky_relu", "prelu", "elu", "silu", "swish", "gelu", "tanh", "sigmoid"}
INITIALIZERS = {"zeros", "constant", "normal", "uniform", "xavier_uniform", "xavier_normal",
                "kaiming_uniform", "kaiming_normal"}


def _invalid_option(option: str, value, fixed: set[str], options: set[str]) -> str:
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if option == "num_classes" and value is None:
        return ""  # create_model's own default
    if option in fixed:
        return "fixed by the architecture"
    if option not in options:
        return "unknown option"
    if option == "num_classes" and not (is_int and value >= 0):
        return "num_classes must be an int >= 0"
    if option in POSITIVE and not (is_int and value >= 1) and not (
            option == "embedding_dim" and value is None):
        return f"{option} must be a positive int"
    if option.startswith("dropout") and not (isinstance(value, int | float) and not
                                             isinstance(value, bool) and 0 <= value < 1):
        return "dropout must be in [0, 1)"
    if option == "width_mult" and not (isinstance(value, int | float) and not
                                       isinstance(value, bool) and value > 0
                                       and math.isfinite(value)):
        return "width_mult must be positive"
    if option in BOOLS and not isinstance(value, bool):
        return f"{option} must be a bool"
    if option == "stem" and not isinstance(value, str):
        return "stem must be a string"
    if option == "activation" and value not in ACTIVATIONS:
        return "activation must be a known activation name"
    if option.endswith("_init") and value is not None and value not in INITIALIZERS:
        return f"{option} must be None or a known initializer name"
    return ""


OPTION_VALUES = st.one_of(st.integers(-2, 4), st.sampled_from([2.5, 0.0, 0.5, 1.5, -0.1,
                                                                float("nan"), float("inf")]),
                          st.booleans(), st.sampled_from(["no", "cifar", None, (1, 1)]))


@given(name=st.sampled_from(["lenet5", "small_cnn", "resnet18", "vgg11_bn", "mobilenet_v2",
                             "unet", "siamese", "googlenet"]),
       pick=st.integers(0, 100), value=OPTION_VALUES, data=st.data())
def test_fuzz_create_model_options(name, pick, value, data):
    from jaxcnn import create_model
    from jaxcnn.models import model_options
    from jaxcnn.models.registry import _fixed_options

    fixed = set(_fixed_options(name))
    options = set(model_options(name)) - {"dtype", "param_dtype", "backbone_kwargs",
                                          "backbone", "blocks", "inverted_residual_setting"}
    choices = sorted(options | fixed | {"bogus"})
    option = choices[pick % len(choices)]
    assume(option not in {"dtype", "param_dtype"})
    why = _invalid_option(option, value, fixed, options)
    net, err = attempt("create_model", lambda: create_model(name, **{option: value}),
                       must_raise=why)
    if err is None and name in ("lenet5", "small_cnn"):
        size = 32
        channels = getattr(net, "in_channels", 3)
        x = jax.ShapeDtypeStruct((2, size, size, channels), np.float32)

        def oracle(out):
            want = net.num_classes or None
            return "" if out.shape[0] == 2 and (want is None or out.shape[-1] == want) else (
                f"{name}({option}={value!r}) gave logits {out.shape}")

        attempt("create_model", lambda: jax.eval_shape(
            lambda x: net.apply(net.init(jax.random.key(0), x), x), x), oracle)


# ----------------------------------------------------------------------------- configs

# The ranges, independent of jaxcnn.train.config: (lowest, highest or None).
CONFIG_RANGES = {
    "log_every": (1, None), "data.crop_padding": (0, None), "seed": (0, 2**31 - 2),
    "data.image_size": (0, None), "optimizer.lr": (0, None), "optimizer.weight_decay": (0, None),
    "optimizer.clip_norm": (0, None), "data.max_examples": (0, None), "lr_find.steps": (2, None),
    "data.cutout": (0, None), "checkpoint.keep": (1, None),
    "num_epochs": (5e-324, None),  # any positive fraction: ceil(num_epochs * steps) steps
    "data.channels": (1, 3),
}


@given(key=st.sampled_from(sorted(CONFIG_RANGES)),
       value=st.one_of(st.integers(-5, 40), st.sampled_from([2**31, -1e-9, 1e-3, 0.5])),
       image_size=st.sampled_from([0, 8, 32]))
def test_fuzz_config_values(key, value, image_size):
    from train_helpers import tiny_config

    from jaxcnn.train.config import validate_config

    config = tiny_config("lenet5")
    config.data.image_size = image_size
    *groups, leaf = key.split(".")
    node = config
    for g in groups:
        node = node[g]
    default = node[leaf]
    if isinstance(default, int) and not isinstance(value, int):
        value = int(value)  # ConfigDict itself refuses float-into-int; the type check is tested
    node[leaf] = value
    lo, hi = CONFIG_RANGES[key]
    why = ""
    if value < lo or (hi is not None and value > hi) or (key == "data.channels" and value == 2):
        why = f"{key}={value} is out of range"
    if key == "data.cutout" and image_size and value > image_size:
        why = f"cutout {value} > image size {image_size}"
    _, err = attempt("config", lambda: validate_config(config), must_raise=why)
    if err is not None:
        assert key in str(err), err


# ----------------------------------------------------------------------------- images


@given(dtype=st.sampled_from(["uint8", "uint16", "int32", "float32", "float64", "bool"]),
       channels=st.sampled_from([0, 1, 2, 3, 4]), h=st.integers(1, 5), w=st.integers(1, 5),
       via_file=st.booleans(), seed=st.integers(0, 2**16))
def test_fuzz_image_reader(dtype, channels, h, w, via_file, seed):
    from PIL import Image

    from jaxcnn.data.images import load_image

    rng = np.random.default_rng(seed)
    shape = (h, w) if channels == 0 else (h, w, channels)
    if dtype == "uint16":
        arr = rng.integers(0, 65536, shape).astype(np.uint16)
    elif dtype in ("float32", "float64"):
        arr = rng.uniform(-0.5, 300.0, shape).astype(dtype)
    else:
        arr = rng.integers(0, 256, shape).astype(dtype)
    image = arr
    if via_file and dtype == "uint16" and channels == 0:
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="PNG")  # a real I;16 file
        path = Path(tempfile.mkdtemp()) / "x.png"
        path.write_bytes(buf.getvalue())
        image = path

    def oracle(out):
        if out.dtype != np.uint8 or out.shape != (h, w, 3):
            return f"load_image gave {out.dtype} {out.shape}"
        if isinstance(image, Path):
            want = np.round(arr / 257.0).astype(np.uint8)
            return "" if np.array_equal(out[..., 0], want) else "16-bit file not scaled by 1/257"
        if dtype == "uint8" and channels in (0, 1, 3):
            want = np.broadcast_to(arr.reshape(h, w, -1), (h, w, 3))
            return "" if np.array_equal(out, want) else "uint8 image changed"
        return ""

    why = ""
    if channels == 2:
        why = "two channels"
    elif dtype in ("uint16", "int32") and not isinstance(image, Path) and arr.max() > 255:
        why = "integers beyond 255"
    attempt("load_image", lambda: load_image(image), oracle, must_raise=why)
    if isinstance(image, Path):
        shutil.rmtree(image.parent)


# ----------------------------------------------------------------------------- weight files


def _lenet_tree() -> dict:
    from jaxcnn import create_model
    from jaxcnn.models import abstract_variables

    tree = abstract_variables(create_model("lenet5"), (32, 32, 1))
    rng = np.random.default_rng(0)
    return jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(np.float32),
                        {"params": tree["params"]})


LENET = None
MUTATIONS = ["none", "float64", "float16", "int32", "bool", "complex64", "nan", "inf", "drop",
             "extra", "int_key", "list_top", "no_params", "reshape", "head", "truncate",
             "garbage", "flip"]


@given(mutation=st.sampled_from(MUTATIONS), leaf=st.integers(0, 9), where=st.floats(0, 1),
       bit=st.integers(0, 7))
def test_fuzz_weight_files(mutation, leaf, where, bit):
    from flax import serialization

    from jaxcnn.pretrained import load

    global LENET
    LENET = LENET if LENET is not None else _lenet_tree()
    tree = jax.tree.map(np.copy, LENET)
    flat = [(m, p) for m in sorted(tree["params"]) for p in sorted(tree["params"][m])]
    module, param = flat[leaf % len(flat)]
    node = tree["params"][module]
    benign = mutation in ("none", "float64", "float16", "head")
    if mutation in ("float64", "float16", "int32", "bool", "complex64"):
        node[param] = node[param].astype(mutation)
    elif mutation in ("nan", "inf"):
        node[param].flat[0] = np.nan if mutation == "nan" else np.inf
    elif mutation == "drop":
        del node[param]
    elif mutation == "extra":
        node["extra"] = np.zeros(3, np.float32)
    elif mutation == "int_key":
        tree["params"][module] = {7: node[param]}  # (jax cannot sort mixed keys)
    elif mutation == "reshape":
        node[param] = np.zeros(node[param].shape + (1,), np.float32)
    elif mutation == "head":
        tree["params"]["fc2"] = {"kernel": np.ones((84, 3), np.float32),
                                 "bias": np.zeros(3, np.float32)}
    blob = serialization.msgpack_serialize(
        [tree] if mutation == "list_top" else {"weights": tree["params"]}
        if mutation == "no_params" else tree)
    if mutation == "truncate":
        blob = blob[:len(blob) // 2]
    elif mutation == "garbage":
        blob = b"\x00garbage" + blob[8:]
    with tempfile.TemporaryDirectory() as d:
        file = Path(d) / "variables.msgpack"
        if mutation == "flip":  # a converted directory (with its sha256), then one bit
            from jaxcnn.pretrained import save_variables

            save_variables(tree, d)
            data = bytearray(file.read_bytes())
            data[min(int(where * len(data)), len(data) - 1)] ^= 1 << bit
            blob = bytes(data)
        file.write_bytes(blob)

        def oracle(out):
            for m in tree["params"]:
                for p, v in tree["params"][m].items():
                    got = out["params"][m][p]
                    if got.dtype != np.float32 or not np.array_equal(got, v.astype(np.float32)):
                        return f"{m}/{p} changed on the way"
            return ""

        attempt("weights", lambda: load("lenet5", path=file), oracle,
                must_raise="" if benign else f"the file was damaged ({mutation})")


# ----------------------------------------------------------------------------- index damage

INDEX = None


def _index_fixture() -> tuple[Path, Path, dict]:
    """A built index of 5 tiny images (3 parts) and its content, made once."""
    from PIL import Image

    from jaxcnn.similarity.features import PixelExtractor
    from jaxcnn.similarity.index import build_index, load_index

    global INDEX
    if INDEX is None:
        root = Path(tempfile.mkdtemp(prefix="jaxcnn-fuzz-index-"))
        (root / "photos").mkdir()
        for i in range(5):
            pixels = np.random.default_rng(i).integers(0, 256, (6, 6, 3), np.uint8)
            Image.fromarray(pixels).save(root / "photos" / f"{i}.png")
        build_index(root / "photos", root / "idx", PixelExtractor(3), chunk_size=2,
                    progress=False)
        good = load_index(root / "idx")
        INDEX = (root / "photos", root / "idx", {"paths": good.paths, "emb": good.embeddings,
                                                 "root": str(good.root)})
    return INDEX


@given(target=st.sampled_from(["meta.json", "part-00000.npz", "part-00001.npz",
                               "part-00002.npz"]),
       damage=st.sampled_from(["truncate", "flip", "zero", "delete", "empty", "append"]),
       where=st.floats(0.0, 1.0), bit=st.integers(0, 7))
@budget(12)
def test_fuzz_damaged_index(target, damage, where, bit):
    from jaxcnn.errors import DatasetError
    from jaxcnn.similarity.features import PixelExtractor
    from jaxcnn.similarity.index import build_index, load_index

    photos, index, good = _index_fixture()
    with tempfile.TemporaryDirectory() as d:
        copy = Path(d) / "idx"
        shutil.copytree(index, copy)
        file = copy / target
        data = bytearray(file.read_bytes())
        pos = min(int(where * len(data)), len(data) - 1)
        if damage == "truncate":
            file.write_bytes(data[:pos])
        elif damage == "flip":
            data[pos] ^= 1 << bit
            file.write_bytes(bytes(data))
        elif damage == "zero":
            data[pos:pos + 64] = bytes(len(data[pos:pos + 64]))
            file.write_bytes(bytes(data))
        elif damage == "delete":
            file.unlink()
        elif damage == "empty":
            file.write_bytes(b"")
        else:
            file.write_bytes(bytes(data) + b"trailing garbage")

        def same(idx):
            if idx.paths != good["paths"] or not np.array_equal(idx.embeddings, good["emb"]) \
                    or str(idx.root) != good["root"]:
                return f"{damage} of {target} at {pos} gave another index without an error"
            return ""

        _, err = attempt("index", lambda: load_index(copy), same)
        if err is not None:
            assert isinstance(err, DatasetError), err
            assert str(file) in str(err) or (target == "meta.json" and damage == "delete"), err
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "... is damaged ... re-embedding"
            attempt("index", lambda: build_index(photos, copy, PixelExtractor(3), chunk_size=2,
                                                 progress=False))
        attempt("index", lambda: load_index(copy),
                lambda idx: "" if sorted(idx.paths) == sorted(good["paths"]) else
                f"rebuild after {damage} of {target} lost images: {idx.paths}")


# ----------------------------------------------------------------------------- checkpoints

CKPT = None


def _checkpoint_fixture() -> tuple[Path, dict]:
    """A workdir with checkpoints 6 and 9 of a small random TrainState, made once."""
    import optax

    from jaxcnn.rundir import host_tree
    from jaxcnn.train import Checkpointer, create_state
    from jaxcnn.train.state import state_to_tree

    global CKPT
    if CKPT is None:
        workdir = Path(tempfile.mkdtemp(prefix="jaxcnn-fuzz-ckpt-"))
        ckpt = Checkpointer(workdir, keep=5, keep_best=False, async_save=False)
        trees = {}
        for step in (6, 9):
            rng = np.random.default_rng(step)
            params = {"conv": {"kernel": rng.standard_normal((3, 3, 2, 8), np.float32)},
                      "fc": {"kernel": rng.standard_normal((8, 4), np.float32),
                             "bias": rng.standard_normal(4).astype(np.float32)}}
            state = create_state({"params": params}, optax.adam(1e-3), step, ("loss",))
            ckpt.save(step, state, {"step": step})
            trees[step] = host_tree(state_to_tree(state))
        ckpt.close()
        CKPT = (workdir, trees)
    return CKPT


@given(target=st.integers(0, 10_000), damage=st.sampled_from(
           ["truncate", "flip", "zero", "delete", "empty", "append", "garble"]),
       where=st.floats(0.0, 1.0), bit=st.integers(0, 7))
@budget(8)
def test_fuzz_damaged_checkpoint(target, damage, where, bit):
    import warnings

    from jaxcnn.errors import CheckpointError
    from jaxcnn.rundir import RunDir

    workdir, trees = _checkpoint_fixture()
    with tempfile.TemporaryDirectory() as d:
        copy = Path(d) / "w"
        shutil.copytree(workdir, copy)
        files = sorted(p for p in (copy / "checkpoints" / "9").rglob("*") if p.is_file())
        file = files[target % len(files)]
        data = bytearray(file.read_bytes())
        pos = min(int(where * len(data)), max(len(data) - 1, 0))
        if damage == "truncate":
            file.write_bytes(data[:pos])
        elif damage in ("flip", "garble") and data:
            data[pos] ^= (1 << bit) if damage == "flip" else 0xFF
            file.write_bytes(bytes(data))
        elif damage == "zero":
            file.write_bytes(bytes(len(data)))
        elif damage == "delete":
            file.unlink()
        elif damage == "empty":
            file.write_bytes(b"")
        else:
            file.write_bytes(bytes(data) + b"trailing garbage")
        what = f"{damage} of {file.relative_to(copy)} at {pos}"

        def check(result):
            step, tree, meta = result
            if step not in trees or meta != {"step": step}:
                return f"{what}: restored step {step} with meta {meta}"
            got = jax.tree.map(np.asarray, tree)
            same = jax.tree.map(np.array_equal, got, trees[step])
            if not all(jax.tree.leaves(same)):
                return f"{what}: step {step} restored with other values"
            if step != 9 and not any("checkpoints/9 is damaged" in str(w.message) for w in seen):
                return f"{what}: fell back to {step} without naming checkpoints/9"
            TALLY["checkpoint"]["fell back, naming the damage" if step != 9 else
                                "restored as saved (damage outside the data)"] += 1
            return ""

        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            _, err = attempt("checkpoint", lambda: RunDir(copy).restore(), check)
        if err is not None:
            assert isinstance(err, CheckpointError), err
