"""`jaxcnn similarity / index / search / siamese-eval` end to end on tiny images written to
tmp_path, called in-process through jaxcnn.cli.main."""

import numpy as np
import pytest
from PIL import Image

from jaxcnn.cli import main


def _photo(seed: int, size: int = 20) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (size, size, 3), dtype=np.uint8)


@pytest.fixture()
def folder(tmp_path):
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    for i in range(5):
        Image.fromarray(_photo(i)).save(root / f"img{i}.png")
    Image.fromarray(_photo(0)[:, ::-1]).save(root / "sub" / "img0_flipped.png")
    return root


def test_similarity_prints_the_lessons_table(folder, capsys):
    assert main(["similarity", str(folder / "img0.png"), str(folder / "img0.png"),
                 "--size", "8"]) == 0
    out = capsys.readouterr().out
    assert "| Method | Similarity" in out
    rows = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in out.splitlines()
            if line.startswith("| ") and "Method" not in line}
    assert set(rows) == {"L1", "MSE", "cosine", "NCC"}
    assert float(rows["L1"]) == 0.0 and float(rows["MSE"]) == 0.0
    assert float(rows["cosine"]) == pytest.approx(1.0) and float(rows["NCC"]) == pytest.approx(1)
    assert "lower (distance)" in out and "higher" in out


def test_similarity_heatmap_of_a_set(folder, tmp_path, capsys):
    heat = tmp_path / "heat.png"
    assert main(["similarity", str(folder), "--size", "8", "--metric", "ncc",
                 "--heatmap", str(heat)]) == 0
    out = capsys.readouterr().out
    assert "ncc matrix" in out
    assert Image.open(heat).size[0] > 100


def test_index_is_resumable_skips_corrupt_files_and_search_saves_a_grid(folder, tmp_path,
                                                                        capsys):
    index = tmp_path / "idx"
    (folder / "broken.jpg").write_bytes(b"not an image at all")
    assert main(["index", str(folder), "--out", str(index), "--size", "8", "--quiet",
                 "--chunk-size", "2"]) == 0
    out, err = capsys.readouterr()
    assert "6 images (6 embedded now, 0 already indexed, 1 unreadable skipped)" in out
    assert "broken.jpg" in err and "broken.jpg" in (index / "skipped.txt").read_text()
    Image.fromarray(_photo(9)).save(folder / "img9.png")  # a new file: only it is embedded
    assert main(["index", str(folder), "--out", str(index), "--size", "8", "--quiet"]) == 0
    assert "7 images (1 embedded now, 6 already indexed, 1 unreadable skipped)" in (
        capsys.readouterr().out)

    grid = tmp_path / "grid.png"
    assert main(["search", str(index), str(folder / "img0.png"), "-k", "3", "--metric", "ncc",
                 "--grid", str(grid)]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.strip()[:2] in ("1.", "2.", "3.")]
    assert len(lines) == 3 and lines[0].rstrip().endswith("img0.png")  # itself first
    assert float(lines[0].split()[1]) == pytest.approx(1.0, abs=1e-5)
    assert Image.open(grid).size[0] > 200


def test_searching_with_another_model_is_a_clear_error(folder, tmp_path, capsys):
    index = tmp_path / "idx"
    assert main(["index", str(folder), "--out", str(index), "--size", "8", "--quiet"]) == 0
    capsys.readouterr()
    code = main(["search", str(index), str(folder / "img1.png"), "--model", "small_cnn",
                 "--grid", ""])
    err = capsys.readouterr().err
    assert code == 1
    assert "built with model='pixels'" in err and "--model pixels" in err
    code = main(["index", str(folder), "--out", str(index), "--size", "16", "--quiet"])
    assert code == 1 and "not comparable" in capsys.readouterr().err


def test_similarity_needs_two_images(folder, capsys):
    assert main(["similarity", str(folder / "img0.png")]) == 1
    assert "at least two images" in capsys.readouterr().err


def test_offline_demo_ranks_the_transformed_cats_first_with_cosine_and_ncc(capsys):
    assert main(["similarity", "--demo"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    assert "OK" in rows["cosine"] and "OK" in rows["NCC"]
    assert "chelsea_brighter 1" in rows["NCC"]  # NCC ignores brightness exactly
