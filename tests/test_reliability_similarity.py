"""Similarity functions and the similarity index under odd inputs and damaged files: exact
or refused integers, NaN rows named, float32-range values, complex dtypes, empty device
lists, temporary files of a killed `jaxcnn index`, truncated parts and garbled meta.json."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from jaxcnn.cli import main
from jaxcnn.errors import DatasetError, InputError
from jaxcnn.similarity import METRICS, cosine, l1, mse, ncc, pairwise, topk
from jaxcnn.similarity import search as search_module
from jaxcnn.similarity.index import build_index, load_index

ROOT = Path(__file__).resolve().parents[1]
EYE = np.eye(3, dtype=np.float32)

# ----------------------------------------------------------------------------- metrics


def test_int64_inputs_are_exact_not_wrapped_to_int32():
    assert float(l1(np.array([2**40]), np.array([0]))) == 2.0**40  # was 0.0
    assert float(mse(np.array([2**40, 0]), np.array([0, 0]))) == pytest.approx(2.0**79, rel=1e-6)
    np.testing.assert_allclose(pairwise(np.array([[2**40, 0]]), np.array([[0, 0]]), "l1"),
                               [[2.0**40]])


@pytest.mark.parametrize("value", [2**40 + 1, 2**63 - 1, -(2**62) - 1])
def test_integers_float32_cannot_hold_are_refused_with_the_value(value):
    with pytest.raises(InputError, match=f"cannot hold exactly, e.g. {value}"):
        l1(np.array([value], np.int64), np.array([0], np.int64))
    with pytest.raises(InputError, match="x has int64 values"):
        pairwise(np.array([[value, 1]], np.int64))


def test_uint64_beyond_int64_and_float64_beyond_float32_are_refused():
    with pytest.raises(InputError, match="cannot hold exactly"):
        cosine(np.array([2**64 - 1], np.uint64), np.array([1], np.uint64))
    with pytest.raises(InputError, match="beyond float32's range"):
        ncc(np.array([1e300, 1.0]), np.array([1.0, 2.0]))


@pytest.mark.parametrize("fn", [l1, mse, cosine, ncc])
def test_complex_inputs_are_refused_by_every_metric(fn):
    with pytest.raises(InputError, match="complex dtype complex64"):
        fn(np.ones(3, np.complex64), np.ones(3, np.complex64))


def test_complex_object_and_ragged_inputs_are_refused_by_search():
    with pytest.raises(InputError, match="queries has complex dtype"):
        topk(EYE.astype(np.complex128), EYE, 1)
    with pytest.raises(InputError, match="database has dtype object"):
        topk(EYE, np.array([[1, "a", None]], dtype=object), 1)
    with pytest.raises(InputError, match="not a numeric array"):
        pairwise([[1.0, 2.0], [3.0]])


def test_nan_vectors_are_refused_by_the_pair_functions():
    with pytest.raises(InputError, match="b holds NaN or infinite values .*position 1"):
        cosine(np.ones(3), np.array([1.0, np.nan, 1.0]))


def test_metrics_stay_jittable_and_check_nothing_on_tracers():
    out = jax.jit(lambda a, b: l1(a, b) + mse(a, b))(jnp.ones(3), jnp.zeros(3))
    assert float(out) == 4.0


def test_mse_of_1e19_values_does_not_overflow_in_its_squares():
    assert float(mse(np.full(8, 1e19, np.float32), np.zeros(8, np.float32))) == pytest.approx(
        1e38, rel=1e-6)
    with pytest.raises(InputError, match="exceeds float32's range"):
        mse(np.full(8, 3e38, np.float32), np.full(8, -3e38, np.float32))


# ----------------------------------------------------------------------------- search


def test_topk_refuses_nan_rows_naming_them():
    q = np.array([[1.0, 0.0, 0.0], [np.nan, 1.0, 0.0]], np.float32)
    with pytest.raises(InputError, match=r"queries row 1 holds NaN"):
        topk(q, EYE, 1)  # NaN used to rank first with score nan
    db = np.tile(EYE, (3, 1))
    db[[2, 4, 5, 6, 7, 8]] = np.inf
    with pytest.raises(InputError, match=r"database row 2, 4, 5, 6, 7 \(and 1 more\)"):
        topk(EYE, jnp.asarray(db), 1)  # device arrays are checked too
    with pytest.raises(InputError, match="y row 0 holds NaN"):
        pairwise(EYE, np.full((1, 3), np.nan, np.float32))


def test_pairwise_mse_of_1e20_float32_vectors_is_exact_not_nan():
    x = np.full((3, 8), 1e20, np.float32)
    np.testing.assert_array_equal(pairwise(x, x, "mse"), np.zeros((3, 3)))  # was all NaN
    y = x.copy()
    y[1] = 1e20 - 1e18
    np.testing.assert_allclose(pairwise(x, y, "mse")[0], [0, 1e36, 0], rtol=1e-3)
    scores, idx = topk(y[1:2], x, 2, "mse")
    np.testing.assert_allclose(np.asarray(scores), [[1e36, 1e36]], rtol=1e-3)


def test_scores_beyond_float32_are_an_error_not_inf():
    x = np.array([[3e38, 3e38]], np.float32)
    with pytest.raises(InputError, match="exceed float32's range .* scale all vectors down"):
        pairwise(x, -x, "mse")
    with pytest.raises(InputError, match="exceed float32's range"):
        topk(x, -x, 1, "l1")


def test_empty_device_list_and_non_float_matmul_dtype_are_clear_errors():
    with pytest.raises(InputError, match=r"devices=\[\] leaves nothing"):
        pairwise(EYE, devices=[])
    with pytest.raises(InputError, match=r"devices=\[\] leaves nothing"):
        topk(EYE, EYE, 1, devices=[])
    with pytest.raises(InputError, match="must be jax devices"):
        topk(EYE, EYE, 1, devices=["cpu"])
    with pytest.raises(InputError, match="use a floating dtype"):
        pairwise(EYE, dtype=jnp.int8)
    with pytest.raises(InputError, match="not a dtype"):
        topk(EYE, EYE, 1, dtype="float33")


@pytest.mark.parametrize("metric", sorted(METRICS))
def test_pairwise_in_many_small_chunks_equals_one_chunk(metric, monkeypatch):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(13, 5)).astype(np.float32)
    y = rng.normal(size=(11, 5)).astype(np.float32)
    whole = pairwise(x, y, metric)
    monkeypatch.setattr(search_module, "_MIN_CHUNK_BYTES", 64)  # 1 row x 4 columns a chunk
    monkeypatch.setattr(search_module, "_L1_TILE_BYTES", 5 * 4 * 3)
    chunked = pairwise(x, y, metric)
    assert type(chunked) is np.ndarray and chunked.dtype == np.float32
    np.testing.assert_allclose(chunked, whole, rtol=1e-6, atol=1e-6)


def test_pairwise_chunks_keep_memory_near_the_output_size():
    # [n, m] output of 1.6 GB: a chunk is at most output / 16 (bench/pairwise_memory.py
    # measures the whole peak: 1.15-1.35x the output).
    rows, cols = search_module._chunk_shape(METRICS["cosine"], 4000, 100_000, 64, 4, None)
    assert rows * 4 * cols * 4 <= 4000 * 100_000 * 4 / 16
    rows, cols = search_module._chunk_shape(METRICS["l1"], 1000, 10_000, 4096, 4, None)
    assert rows * cols * 4096 * 4 <= search_module._L1_TILE_BYTES


def test_pairwise_refuses_tracers_with_the_alternative():
    with pytest.raises(InputError, match="cannot be traced"):
        jax.jit(lambda x: pairwise(x))(EYE)


# ----------------------------------------------------------------------------- index


def _photos(root: Path, n: int = 5) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (10, 10, 3), np.uint8)).save(
            root / f"img{i}.png")
    return root


def _index(folder: Path, out: Path, *extra: str) -> int:
    return main(["index", str(folder), "--out", str(out), "--size", "6", "--quiet",
                 "--chunk-size", "2", *extra])


@pytest.mark.parametrize("flags, message", [
    (["--chunk-size", "0"], "chunk_size .*--chunk-size.* positive number of images; got 0"),
    (["--chunk-size", "-3"], "got -3"),
    (["--size", "0"], r"--size\) must be a positive number of pixels .*got 0"),
])
def test_index_rejects_zero_or_negative_sizes(flags, message, tmp_path, capsys):
    folder = _photos(tmp_path / "photos", 2)
    assert main(["index", str(folder), "--out", str(tmp_path / "idx"), "--quiet", *flags]) == 1
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "idx" / "meta.json").exists()


def test_index_killed_between_write_and_rename_leaves_nothing_that_matches(tmp_path):
    folder = _photos(tmp_path / "photos", 5)
    out = tmp_path / "idx"
    script = textwrap.dedent(f"""
        import os, signal
        from jaxcnn.similarity import index
        from jaxcnn.similarity.features import PixelExtractor
        real, calls = os.replace, []
        def replace(src, dst):
            calls.append(dst)
            if str(dst).endswith("part-00001.npz"):
                os.kill(os.getpid(), signal.SIGKILL)  # mid-write of the second part
            real(src, dst)
        os.replace = replace
        index.build_index({str(folder)!r}, {str(out)!r}, PixelExtractor(6), chunk_size=2,
                          progress=False)
    """)
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    names = sorted(p.name for p in out.iterdir())
    assert "part-00000.npz" in names and "part-00001.npz" not in names
    assert any(n.startswith(".part-00001.npz.tmp") for n in names)  # the complete leftover
    assert len(load_index(out)) == 2  # the leftover is neither read nor a BadZipFile
    report = build_index(folder, out, _pixels(), chunk_size=2, progress=False)
    assert (report.added, report.already, report.total) == (3, 2, 5)
    assert not [n for n in os.listdir(out) if ".tmp" in n]  # the dead writer's file is gone
    idx = load_index(out)
    assert sorted(idx.paths) == [f"img{i}.png" for i in range(5)]  # no duplicates


def _pixels():
    from jaxcnn.similarity.features import PixelExtractor

    return PixelExtractor(6)


def test_truncated_part_is_named_by_search_and_rebuilt_by_index(tmp_path, capsys):
    folder = _photos(tmp_path / "photos", 5)
    out = tmp_path / "idx"
    assert _index(folder, out) == 0
    part = out / "part-00001.npz"
    part.write_bytes(part.read_bytes()[:100])
    capsys.readouterr()
    assert main(["search", str(out), str(folder / "img0.png"), "--grid", ""]) == 1
    err = capsys.readouterr().err
    assert f"the similarity index file {part} is damaged: BadZipFile" in err
    assert "Run `jaxcnn index` with the same --out" in err
    with pytest.warns(UserWarning, match="part-00001.npz is damaged.*re-embedding its images"):
        assert _index(folder, out) == 0
    assert "5 images (2 embedded now, 3 already indexed" in capsys.readouterr().out
    assert main(["search", str(out), str(folder / "img3.png"), "--grid", "", "-k", "1"]) == 0
    assert "img3.png" in capsys.readouterr().out.splitlines()[1]


def test_part_with_wrong_shapes_is_damage_not_a_silent_mismatch(tmp_path):
    folder = _photos(tmp_path / "photos", 3)
    out = tmp_path / "idx"
    build_index(folder, out, _pixels(), chunk_size=2, progress=False)
    np.savez(out / "part-00001.npz", paths=np.array(["img2.png"]),
             embeddings=np.zeros((1, 5), np.float32))
    with pytest.raises(DatasetError, match=r"part-00001.npz is damaged: it holds 1 paths and "
                                           r"embeddings of shape \(1, 5\), expected \[1, 108\]"):
        load_index(out)


@pytest.mark.parametrize("garbage", [b"{\"format\": \"jaxcnn-sim", b"[1, 2]",
                                     b"{\"format\": \"jaxcnn-similarity-index\"}"])
def test_garbled_meta_json_is_named_and_index_rebuilds_everything(garbage, tmp_path, capsys):
    folder = _photos(tmp_path / "photos", 3)
    out = tmp_path / "idx"
    assert _index(folder, out) == 0
    (out / "meta.json").write_bytes(garbage)
    capsys.readouterr()
    assert main(["search", str(out), str(folder / "img0.png"), "--grid", ""]) == 1
    assert f"the similarity index file {out / 'meta.json'} is damaged" in capsys.readouterr().err
    with pytest.warns(UserWarning, match="Rebuilding the whole index"):
        assert _index(folder, out) == 0
    assert "3 images (3 embedded now, 0 already indexed" in capsys.readouterr().out
    assert json.loads((out / "meta.json").read_text())["dim"] == 108


def test_a_deleted_part_is_named_and_an_uncommitted_one_is_never_read(tmp_path):
    folder = _photos(tmp_path / "photos", 5)
    out = tmp_path / "idx"
    build_index(folder, out, _pixels(), chunk_size=2, progress=False)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["parts"] == {"part-00000.npz": 2, "part-00001.npz": 2, "part-00002.npz": 1}
    (out / "part-00001.npz").unlink()
    with pytest.raises(DatasetError, match="part-00001.npz is damaged: meta.json lists it but "
                                           "the file is missing"):
        load_index(out)
    with pytest.warns(UserWarning, match="part-00001.npz is damaged"):
        report = build_index(folder, out, _pixels(), chunk_size=2, progress=False)
    assert (report.added, report.total) == (2, 5)
    # A part renamed into place whose meta.json commit never happened (writer killed).
    np.savez(out / "part-00009.npz", paths=np.array(["img0.png"]),
             embeddings=np.zeros((1, 108), np.float32))
    assert sorted(load_index(out).paths) == [f"img{i}.png" for i in range(5)]
    build_index(folder, out, _pixels(), chunk_size=2, progress=False)
    assert not (out / "part-00009.npz").exists()


def test_a_changed_byte_in_meta_json_that_stays_valid_json_is_caught(tmp_path):
    folder = _photos(tmp_path / "photos", 2)
    out = tmp_path / "idx"
    build_index(folder, out, _pixels(), chunk_size=2, progress=False)
    text = (out / "meta.json").read_text()
    (out / "meta.json").write_text(text.replace('"dim": 108', '"dim": 107'))
    with pytest.raises(DatasetError, match="does not match the sha256 written with it"):
        load_index(out)
