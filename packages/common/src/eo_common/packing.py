"""One-time packing of a data set into memory-mapped ``.npy`` arrays that read at memory speed.

Decoding DEFLATE GeoTIFFs costs milliseconds per sample per band; a GPU step on a small network costs
less. :func:`pack_dataset` runs a map-style data set once and stores every field of every sample in
one ``.npy`` file per field, shape ``(N, *field_shape)``, in the field's own dtype;
:class:`PackedDataset` maps those files and returns the same samples (same keys, dtypes, values and
container types: torch tensors stay tensors, numpy arrays stay arrays, Python numbers and strings
stay numbers and strings; a string field is stored with a fixed width, the first sample's length
rounded up to 64 characters).

Why ``.npy`` memory maps (and not HDF5, LMDB or zarr):

* a read is a ``memcpy`` from the page cache: no decompression, no per-read library call, no global
  lock (h5py serialises every read of a process behind one lock), so it scales with loader workers;
* any number of worker processes can map the same files, after ``fork`` or ``spawn`` (a map is
  opened lazily in each process), where HDF5 and LMDB handles must not cross a ``fork``;
* the format is numpy's own, documented and stable since 2008, and needs no extra dependency.

The cost is disk space: samples are stored uncompressed (as they are in memory). Fields must have the
same shape and dtype in every sample (true for fixed-size chips and crops; pack the raw decoded
sample and keep random augmentation after the packed reader).

Packing is resumable: the arrays are written in place, progress is recorded atomically every
``flush_every`` samples in ``progress.json``, and a rerun with the same data set continues from there;
``manifest.json`` is written last, so a folder with a manifest is complete.

Example:
    >>> import tempfile, torch
    >>> ds = [{"image": torch.full((2, 4, 4), float(i)), "label": i} for i in range(3)]
    >>> folder = pack_dataset(ds, tempfile.mkdtemp() + "/packed", progress=False)
    >>> packed = PackedDataset(folder)
    >>> len(packed), torch.equal(packed[2]["image"], ds[2]["image"]), packed[2]["label"]
    (3, True, 2)
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from eo_common.io import atomic_write

__all__ = ["pack_dataset", "PackedDataset", "PackError", "MANIFEST"]

MANIFEST = "manifest.json"
_PROGRESS = "progress.json"
_FORMAT = 1


class PackError(ValueError):
    """A sample cannot be packed, or a packed folder is incomplete or does not match."""


def _flatten(sample: Any) -> tuple[str, list[tuple[str, str, Any]]]:
    """``(container, [(key, kind, numpy value)])`` of a sample: a dict, a tuple/list or one array."""
    if isinstance(sample, dict):
        container, items = "dict", list(sample.items())
    elif isinstance(sample, tuple | list):
        container = "tuple" if isinstance(sample, tuple) else "list"
        items = [(str(i), v) for i, v in enumerate(sample)]
    else:
        container, items = "single", [("0", sample)]
    out = []
    for key, value in items:
        if not isinstance(key, str):
            raise PackError(f"sample keys must be strings, got {key!r}")
        kind, array = _to_numpy(key, value)
        out.append((key, kind, array))
    return container, out


def _to_numpy(key: str, value: Any) -> tuple[str, np.ndarray]:
    try:
        import torch

        if isinstance(value, torch.Tensor):
            if value.dtype == torch.bfloat16:
                raise PackError(f"field {key!r}: bfloat16 tensors cannot be stored as .npy")
            return "tensor", value.detach().cpu().numpy()
    except ImportError:  # pragma: no cover - torch is a dependency of eo_common
        pass
    if isinstance(value, np.ndarray):
        return "ndarray", value
    if isinstance(value, str):  # fixed width: sample 0's length rounded up to 64 characters
        return "str", np.asarray(value, dtype=f"<U{max(64, -(-len(value) // 64) * 64)}")
    if isinstance(value, bool | np.bool_):
        return "bool", np.asarray(value)
    if isinstance(value, int | np.integer):
        return "int", np.asarray(value, dtype=np.int64)
    if isinstance(value, float | np.floating):
        return "float", np.asarray(value, dtype=np.float64)
    raise PackError(
        f"field {key!r}: cannot pack a {type(value).__name__} (arrays, tensors, numbers, str)"
    )


def _describe(container: str, fields: list[tuple[str, str, np.ndarray]], n: int) -> dict:
    return {
        "format": _FORMAT,
        "count": n,
        "container": container,
        "fields": [
            {"key": k, "kind": kind, "dtype": a.dtype.str, "shape": list(a.shape)}
            for k, kind, a in fields
        ],
    }


def _field_path(folder: Path, index: int) -> Path:
    return folder / f"field_{index:02d}.npy"


def pack_dataset(
    dataset: Sequence[Any],
    folder: str | os.PathLike,
    *,
    resume: bool = True,
    flush_every: int = 256,
    progress: bool = True,
) -> Path:
    """Read every sample of ``dataset`` once and store it in ``folder`` (see the module docstring).

    Args:
        dataset: a map-style data set (``len`` and ``dataset[i]``) whose samples are a dict of
            arrays/tensors/numbers, a tuple or list of them, or one array/tensor; every sample must
            have the same keys, shapes and dtypes as the first.
        folder: output folder (created).
        resume: continue an interrupted packing of the same layout (False: start again).
        flush_every: samples between progress records.
        progress: show a tqdm bar.

    Returns:
        ``Path(folder)``.

    Raises:
        PackError: an empty data set, an unsupported field, or a sample whose layout differs from
            the first (the message names the sample and the field).
    """
    from tqdm.auto import tqdm

    folder = Path(folder)
    n = len(dataset)
    if n == 0:
        raise PackError("the data set is empty: nothing to pack")
    container, first = _flatten(dataset[0])
    layout = _describe(container, first, n)
    manifest = folder / MANIFEST
    if manifest.exists():
        if resume and json.loads(manifest.read_text()) == layout:
            return folder  # already complete
        manifest.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    done = 0
    progress_file = folder / _PROGRESS
    if resume and progress_file.exists():
        record = json.loads(progress_file.read_text())
        if record.get("layout") == layout:
            done = int(record["done"])
    mode = "r+" if done > 0 else "w+"
    arrays = [
        np.lib.format.open_memmap(
            _field_path(folder, i), mode=mode, dtype=a.dtype, shape=(n, *a.shape)
        )
        for i, (_, _, a) in enumerate(first)
    ]

    def flush(count: int) -> None:
        for a in arrays:
            a.flush()
        with atomic_write(progress_file, "w") as f:
            json.dump({"layout": layout, "done": count}, f)

    bar = tqdm(total=n, initial=done, desc=f"pack {folder.name}", disable=not progress)
    try:
        for i in range(done, n):
            c, fields = _flatten(dataset[i]) if i else (container, first)
            if c != container or [(k, kd) for k, kd, _ in fields] != [
                (k, kd) for k, kd, _ in first
            ]:
                raise PackError(f"sample {i}: keys/types differ from sample 0")
            for j, ((key, kind, value), ref) in enumerate(zip(fields, first)):
                if kind == "str" and len(str(value)) <= ref[2].dtype.itemsize // 4:
                    value = value.astype(ref[2].dtype)
                if value.shape != ref[2].shape or value.dtype != ref[2].dtype:
                    raise PackError(
                        f"sample {i}, field {key!r}: {value.dtype} {value.shape} differs from "
                        f"sample 0 ({ref[2].dtype} {ref[2].shape}); pack fixed-size samples"
                    )
                arrays[j][i] = value
            bar.update(1)
            if (i + 1) % flush_every == 0:
                flush(i + 1)
        flush(n)
    finally:
        bar.close()
        arrays.clear()  # drop the maps (unmapped when collected)
    with atomic_write(manifest, "w") as f:
        json.dump(layout, f, indent=1)
    progress_file.unlink(missing_ok=True)
    return folder


class PackedDataset:
    """The samples of a :func:`pack_dataset` folder, read from memory maps.

    Each process opens the maps on first access (safe with forked or spawned loader workers).
    ``transform`` is applied to each sample (e.g. random augmentation after the packed read).

    Raises:
        PackError: the folder has no ``manifest.json`` (not packed, or packing did not finish).
    """

    def __init__(self, folder: str | os.PathLike, transform: Any = None):
        self.folder = Path(folder)
        manifest = self.folder / MANIFEST
        if not manifest.exists():
            raise PackError(f"{self.folder}: no {MANIFEST} (not packed, or packing did not finish)")
        self.layout = json.loads(manifest.read_text())
        if self.layout.get("format") != _FORMAT:
            raise PackError(f"{manifest}: unknown format {self.layout.get('format')!r}")
        self.transform = transform
        self._arrays: list[np.ndarray] | None = None
        self._pid: int | None = None

    def __len__(self) -> int:
        return int(self.layout["count"])

    def _maps(self) -> list[np.ndarray]:
        if self._arrays is None or self._pid != os.getpid():
            self._arrays = [
                np.load(_field_path(self.folder, i), mmap_mode="r")
                for i in range(len(self.layout["fields"]))
            ]
            self._pid = os.getpid()
        return self._arrays

    def __getstate__(self) -> dict:  # the maps are reopened in each process
        state = dict(self.__dict__)
        state["_arrays"], state["_pid"] = None, None
        return state

    def __getitem__(self, index: int) -> Any:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} packed samples")
        values = []
        for spec, array in zip(self.layout["fields"], self._maps()):
            values.append(_from_numpy(spec["kind"], np.array(array[index])))
        container = self.layout["container"]
        if container == "dict":
            sample: Any = {spec["key"]: v for spec, v in zip(self.layout["fields"], values)}
        elif container == "tuple":
            sample = tuple(values)
        elif container == "list":
            sample = values
        else:
            sample = values[0]
        return self.transform(sample) if self.transform is not None else sample


def _from_numpy(kind: str, value: np.ndarray) -> Any:
    if kind == "tensor":
        import torch

        return torch.from_numpy(value)
    if kind == "ndarray":
        return value
    if kind == "bool":
        return bool(value)
    if kind == "int":
        return int(value)
    if kind == "str":
        return str(value)
    return float(value)
