"""The epoch table printed during training: one header, one row per epoch, and a dash (not a
NaN) where the run does not measure a column (no validation split; detection has no eval loss)."""

import io

from jaxcnn.train.monitor import EpochTable


def test_epoch_table_prints_values_and_dashes_for_what_is_not_measured():
    out = io.StringIO()
    table = EpochTable("map_50", stream=out)
    table.row({"epoch": 1, "train_loss": 0.96534, "valid_map_50": 0.2383, "epoch_seconds": 356.6})
    table.row({"epoch": 2, "train_loss": 0.5, "valid_loss": 0.25, "valid_map_50": 0.5,
               "epoch_seconds": 61.0})
    header, first, second = out.getvalue().splitlines()
    assert header.split() == ["epoch", "train_loss", "valid_loss", "map_50", "time"]
    assert first.split() == ["1", "0.9653", "-", "0.2383", "5:56"]
    assert second.split() == ["2", "0.5000", "0.2500", "0.5000", "1:01"]
    assert "nan" not in out.getvalue()
