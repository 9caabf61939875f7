"""DataLoader settings from a DataConfig, and packed data sets that give the same samples."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from affine import Affine
from eo_common.config import DataConfig, default_num_workers
from eo_common.loading import loader_kwargs, resolve_workers
from eo_common.packing import MANIFEST, PackedDataset, PackError, pack_dataset
from eo_common.raster import read_raster, write_raster
from torch.utils.data import DataLoader

T10 = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4400000.0)


def test_loader_kwargs_from_data_config():
    kw = loader_kwargs(DataConfig(batch_size=4, num_workers=-1), pin_memory=True)
    assert kw["num_workers"] == default_num_workers() and kw["batch_size"] == 4
    assert kw["pin_memory"] is True
    if kw["num_workers"]:
        assert kw["persistent_workers"] is True and kw["prefetch_factor"] == 4
    zero = loader_kwargs(DataConfig(num_workers=0))
    assert "persistent_workers" not in zero and "prefetch_factor" not in zero
    assert zero["pin_memory"] is torch.cuda.is_available()
    two = loader_kwargs(DataConfig(num_workers=0), num_workers=2, prefetch_factor=2)
    assert (two["num_workers"], two["prefetch_factor"]) == (2, 2)
    DataLoader(list(range(8)), **loader_kwargs(DataConfig(batch_size=2), pin_memory=False))
    with pytest.raises(ValueError, match="num_workers"):
        resolve_workers(-2)


class _Triplets:
    """SEN12MS-CR-like samples read from GeoTIFFs: 13-band S2 uint16, 2-band S1 float32, cloudy S2."""

    def __init__(self, folder, n: int, size: int = 32):
        rng = np.random.default_rng(0)
        self.items = []
        for i in range(n):
            paths = {}
            for name, bands, dtype in (("s1", 2, "float32"), ("s2", 13, "uint16"),
                                       ("s2_cloudy", 13, "uint16")):  # fmt: skip
                if dtype == "uint16":
                    arr = rng.integers(0, 10000, (bands, size, size), dtype=np.uint16)
                else:
                    arr = rng.uniform(-25, 0, (bands, size, size)).astype(np.float32)
                paths[name] = write_raster(
                    folder / f"{name}_{i}.tif", arr, crs="EPSG:32633", transform=T10
                )
            self.items.append(paths)
        self.reads = 0

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        self.reads += 1
        p = self.items[i]
        return {
            "s1": torch.from_numpy(read_raster(p["s1"]).array),
            "s2": torch.from_numpy(read_raster(p["s2"]).array.astype(np.int32)),
            "s2_cloudy": read_raster(p["s2_cloudy"]).array,
            "index": i,
            "cloud_cover": float(i) / 10,
            "name": f"ROIs1158_spring_s1_{i}_p{i * 7}",
        }


def test_packed_samples_equal_the_geotiff_samples(tmp_path):
    ds = _Triplets(tmp_path, 5)
    folder = pack_dataset(ds, tmp_path / "packed", progress=False)
    packed = PackedDataset(folder)
    assert len(packed) == 5
    for i in range(5):
        a, b = ds[i], packed[i]
        assert a.keys() == b.keys()
        for key in ("s1", "s2"):
            assert isinstance(b[key], torch.Tensor) and b[key].dtype == a[key].dtype
            assert torch.equal(a[key], b[key])
        assert isinstance(b["s2_cloudy"], np.ndarray) and b["s2_cloudy"].dtype == np.uint16
        np.testing.assert_array_equal(a["s2_cloudy"], b["s2_cloudy"])
        assert b["index"] == i and isinstance(b["index"], int)
        assert b["cloud_cover"] == a["cloud_cover"] and b["name"] == a["name"]
    # the same batches through DataLoader workers (maps reopened in each worker process)
    loader = DataLoader(packed, batch_size=2, num_workers=2)
    first = next(iter(loader))
    assert torch.equal(first["s1"], torch.stack([ds[0]["s1"], ds[1]["s1"]]))


def test_packing_resumes_and_a_complete_folder_is_not_repacked(tmp_path):
    samples = [(torch.arange(6, dtype=torch.float32).reshape(2, 3) + i, i) for i in range(10)]

    class Flaky:
        def __init__(self, fail_at):
            self.fail_at, self.read = fail_at, []

        def __len__(self):
            return len(samples)

        def __getitem__(self, i):
            if i == self.fail_at:
                raise RuntimeError("interrupted")
            self.read.append(i)
            return samples[i]

    first = Flaky(fail_at=7)
    with pytest.raises(RuntimeError):
        pack_dataset(first, tmp_path / "p", flush_every=3, progress=False)
    assert not (tmp_path / "p" / MANIFEST).exists()
    with pytest.raises(PackError, match="did not finish"):
        PackedDataset(tmp_path / "p")
    again = Flaky(fail_at=-1)
    pack_dataset(again, tmp_path / "p", flush_every=3, progress=False)
    assert again.read == [0, 6, 7, 8, 9]  # sample 0 for the layout, then from the last record
    packed = PackedDataset(tmp_path / "p")
    assert all(torch.equal(packed[i][0], samples[i][0]) and packed[i][1] == i for i in range(10))
    third = Flaky(fail_at=-1)
    pack_dataset(third, tmp_path / "p", progress=False)
    assert third.read == [0]  # complete: nothing re-read


def test_pack_rejects_samples_of_another_shape(tmp_path):
    ds = [{"x": np.zeros((2, 4))}, {"x": np.zeros((2, 5))}]
    with pytest.raises(PackError, match=r"sample 1, field 'x'"):
        pack_dataset(ds, tmp_path / "bad", progress=False)
    with pytest.raises(PackError, match="empty"):
        pack_dataset([], tmp_path / "empty", progress=False)
    with pytest.raises(PackError, match="cannot pack a dict"):
        pack_dataset([{"x": {"nested": 1}}], tmp_path / "nested", progress=False)
    with pytest.raises(PackError, match="sample 1, field 'id'"):  # longer than the stored width
        pack_dataset([{"id": "a"}, {"id": "b" * 70}], tmp_path / "long", progress=False)


class _Augmented(torch.utils.data.Dataset):
    """Random crops and noise from sample_rng: the randomness of a sample is its key's."""

    def __init__(self, n: int = 12):
        self.base = torch.arange(n * 16, dtype=torch.float32).reshape(n, 16)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key):
        from eo_common.loading import sample_rng

        i, rng = sample_rng(key)
        start = int(rng.integers(0, 8))
        return self.base[i, start : start + 8] + torch.from_numpy(rng.normal(size=8)).float()


def _epochs(loader, epochs, seed=0):
    """Batches of each epoch, the main process re-seeded from (seed, epoch) first (as EpochSeed)."""
    from eo_common.training.seeding import derive_seed

    out = []
    for e in epochs:
        torch.manual_seed(derive_seed(seed, e))
        out.append(torch.cat(list(loader)))
    return out


def test_seeded_sampler_makes_samples_independent_of_workers_and_restarts():
    """Epoch e's samples (order and augmentation) depend on (seed, e, index) only: 0 workers, 2
    persistent workers running through epochs 0-2, and a fresh loader started at epoch 2 (a resumed
    run) give the same batches. With the plain RandomSampler the persistent workers' own generators
    carry over between epochs, and a restart at epoch 2 differs."""
    from eo_common.loading import SeededSampler
    from torch.utils.data import RandomSampler

    ds = _Augmented()

    def loader(workers, seeded=True):
        sampler = SeededSampler(len(ds), shuffle=True) if seeded else RandomSampler(ds)
        kw = loader_kwargs(batch_size=4, num_workers=workers, pin_memory=False)
        return DataLoader(ds, sampler=sampler, **kw)

    main = _epochs(loader(0), [0, 1, 2])
    persistent = _epochs(loader(2), [0, 1, 2])
    resumed = _epochs(loader(2), [2])
    assert not torch.equal(main[0], main[1])  # epochs differ
    for a, b in zip(main, persistent):
        assert torch.equal(a, b)
    assert torch.equal(resumed[0], main[2])
    # without it: worker generators persist across epochs, so a restart at epoch 2 differs
    unseeded = _epochs(loader(2, seeded=False), [0, 1, 2])
    assert not torch.equal(_epochs(loader(2, seeded=False), [2])[0], unseeded[2])
