"""Data lists as researchers have them (official tree, GLF-CR, DSen2-CR), held-out validation scenes,
and cr-make-datalist on the official download tree."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import rasterio
from cloud_removal.cli import cr_make_datalist, cr_train
from cloud_removal.data import SEN12MSCRDataset
from cloud_removal.datalist import (
    CloudRemovalDataError,
    CloudRemovalFileNotFoundError,
    read_data_list,
    scene_of,
)


@pytest.mark.parametrize("layout", ["glfcr", "dsen2cr"])
def test_same_name_layouts_are_read(layouts, tmp_path, layout):
    """GLF-CR (comma) and DSen2-CR (tab) lists use the same file name in the three folders."""
    root = getattr(layouts, f"make_{layout}")(tmp_path / layout, size=32)
    data_list = root / ("data.csv" if layout == "glfcr" else "datasetfilelist.csv")
    assert ("\t" in data_list.read_text()) == (layout == "dsen2cr")
    ds = SEN12MSCRDataset(root, data_list, "train", load_size=32, crop_size=16, train=False)
    assert len(ds) == 4
    sample = ds.samples[0]
    assert sample.s1.name == sample.s2_clear.name == sample.s2_cloudy.name
    item = ds[0]
    with rasterio.open(sample.s2_cloudy) as src:
        cloudy = src.read().astype(np.float64)[:, 8:24, 8:24]
    np.testing.assert_allclose(item["optical"].numpy(), np.clip(cloudy, 0, 1e4) / 1e4, atol=1e-6)
    assert [len(SEN12MSCRDataset(root, data_list, s, crop_size=16)) for s in ("val", "test")] == [
        1,
        1,
    ]


def test_missing_file_of_a_same_name_list_names_list_row_and_file(layouts, tmp_path):
    root = layouts.make_glfcr(tmp_path / "g", size=16)
    (root / "s2_cloudfree" / "ROIs1868_summer_101_p801.tif").unlink()
    with pytest.raises(
        CloudRemovalFileNotFoundError,
        match=r"data.csv row 2: missing .*s2_cloudfree/ROIs1868_summer_101_p801.tif$",
    ):
        SEN12MSCRDataset(root, split="train", crop_size=16)


def test_list_without_validation_rows_holds_out_whole_scenes(layouts, tmp_path):
    """GLF-CR lists are often train/test only: val_fraction of the training scenes become the
    validation split, whole scenes, the same for every seed; 0 refuses such a list."""
    scenes = [5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 3]
    root = layouts.make_glfcr(tmp_path / "g", splits=[1] * 10 + [3], scenes=scenes, size=16)
    kw = {"load_size": 16, "crop_size": 16}
    train = SEN12MSCRDataset(root, split="train", val_fraction=0.4, **kw)
    val = SEN12MSCRDataset(root, split="val", val_fraction=0.4, **kw)
    train_scenes = {scene_of(r) for r in train.rows}
    val_scenes = {scene_of(r) for r in val.rows}
    assert len(val_scenes) == 2 and len(val) == 4  # round(0.4 x 5 scenes), both patches of each
    assert len(train) == 6 and not train_scenes & val_scenes
    assert {r.split for r in val.rows} == {2}
    assert len(SEN12MSCRDataset(root, split="test", val_fraction=0.4, **kw)) == 1
    with pytest.raises(
        CloudRemovalDataError, match=r"no validation rows \(split 2\).*--val_fraction"
    ):
        SEN12MSCRDataset(root, split="val", val_fraction=0.0, **kw)


def test_cr_train_on_a_glfcr_list_without_validation_rows(layouts, tmp_path, tiny_flags):
    """cr-train accepts GLF-CR's layout as typed (--data_list_filepath data.csv) and holds out scenes."""
    root = layouts.make_glfcr(tmp_path / "g", splits=[1] * 6 + [3], size=48)
    argv = ["--input_data_folder", str(root), "--data_list_filepath", str(root / "data.csv")]
    argv += [
        *tiny_flags,
        "--max_epochs",
        "1",
        "--output_dir",
        str(tmp_path / "runs"),
        "--name",
        "g",
    ]
    assert cr_train(argv) == 0
    assert (tmp_path / "runs" / "g" / "checkpoints" / "best.ckpt").is_file()


def test_make_datalist_splits_the_official_tree_by_scene(layouts, tmp_path, capsys):
    root = layouts.make_official_tree(tmp_path / "tree", scenes_per_season=3, patches_per_scene=2)
    assert cr_make_datalist(["--input_data_folder", str(root), "--seed", "1"]) == 0
    rows = read_data_list(root / "data.csv")
    assert len(rows) == 4 * 3 * 2
    seasons = {r.s1_folder.split("_s1/")[0] for r in rows}
    assert seasons == {"ROIs1158_spring", "ROIs1868_summer", "ROIs1970_fall", "ROIs2017_winter"}
    split_of: dict[str, set[int]] = {}
    for r in rows:
        split_of.setdefault(scene_of(r), set()).add(r.split)
    assert len(split_of) == 12 and all(
        len(s) == 1 for s in split_of.values()
    )  # no scene in two splits
    per_split = [sum(1 for s in split_of.values() if s == {k}) for k in (1, 2, 3)]
    assert per_split == [10, 1, 1]  # round(0.1 x 12) = 1 scene each for validation and test
    with open(root / "data.csv") as f:
        first = next(csv.reader(f))
    assert first[1].endswith("_s1/s1_" + first[4].split("_s1_")[1].split("_p")[0])
    for split in ("train", "val", "test"):  # the list is read back by the dataset
        assert len(SEN12MSCRDataset(root, split=split, load_size=16, crop_size=16)) > 0
    # an existing list is kept unless --overwrite; a different seed gives another split
    before = (root / "data.csv").read_bytes()
    capsys.readouterr()
    assert cr_make_datalist(["--input_data_folder", str(root), "--seed", "2"]) == 2
    assert "data.csv: the data list exists; pass --overwrite" in capsys.readouterr().err
    assert (root / "data.csv").read_bytes() == before
    assert cr_make_datalist(["--root", str(root), "--seed", "2", "--overwrite"]) == 0
    assert (root / "data.csv").read_bytes() != before
    # a patch without its cloudy counterpart is named
    gone = next((root / "ROIs1970_fall_s2_cloudy").rglob("*.tif"))
    gone.unlink()
    assert cr_make_datalist(["--root", str(root), "--out", str(tmp_path / "l.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and gone.name in err[0] and "missing" in err[0]
    assert cr_make_datalist(["--root", str(tmp_path / "empty_nothing")]) == 2
    assert "data folder not found" in capsys.readouterr().err
