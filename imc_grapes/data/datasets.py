"""Data sets as tensors on any torch device, and a fast shuffling batch loader.

Every data set is a pair of :class:`Split` (train, test) with images ``x: [n, C, H, W]`` (float32,
normalised with the training split's pixel mean/std) and labels ``y: [n]`` (int64).
"""
from __future__ import annotations

import math
import numbers
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from .cache import DatasetError, resolved_data_root, verify
from .idx import read_idx
from .registry import DATASET_NAMES, SYNTHETIC, SYNTHETIC_CLASSES, SYNTHETIC_IMAGE_SHAPE, get_spec
from ..suggest import did_you_mean


@dataclass
class Split:
    """One split of a data set: ``x: [n, C, H, W]`` float, ``y: [n]`` int64, on one device."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def to(self, device: torch.device | str) -> "Split":
        return Split(self.x.to(device), self.y.to(device))

    def subset(self, n: int | None) -> "Split":
        """The first ``n`` samples (all if ``n`` is None or larger than the split).

        Raises:
            ValueError: ``n`` is not None and not an integer ≥ 1 (0 would give an empty split and a negative ``n``
                would silently drop the *last* samples, as a Python slice does).
        """
        if n is not None and (isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1):
            raise ValueError(f"Split.subset: n must be an integer ≥ 1 (or None for all), got {n!r}")
        if n is None or n >= len(self):
            return self
        return Split(self.x[:n], self.y[:n])


@dataclass
class Dataset:
    """A named data set: ``train`` and ``test`` splits plus metadata."""

    name: str
    train: Split
    test: Split
    n_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])


def load_real(name: str, root: str | os.PathLike[str] | None = None,
              device: torch.device | str = "cpu") -> Dataset:
    """Load MNIST or Fashion-MNIST from the verified IDX files in the cache folder.

    Raises DatasetNotFoundError / ChecksumError (naming the fetch command) when files are missing or corrupt;
    never falls back to random data.
    """
    spec = get_spec(name)
    folder = verify(spec, root)
    arrays = [read_idx(folder / f.name) for f in spec.files]

    def images(a: np.ndarray) -> torch.Tensor:
        # (x / 255 − mean) / std in float32, in place on one copy (the same numbers as new tensors at each step,
        # 3–5× faster on the 47M pixels of MNIST's training set)
        x = torch.from_numpy(a.astype(np.float32)).div_(255.0).reshape(-1, *spec.image_shape)
        return x.sub_(spec.mean).div_(spec.std).to(device)

    def labels(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.astype(np.int64)).to(device)

    return Dataset(spec.name, Split(images(arrays[0]), labels(arrays[1])),
                   Split(images(arrays[2]), labels(arrays[3])), spec.n_classes)


def make_synthetic(n_train: int = 2000, n_test: int = 500, n_classes: int = SYNTHETIC_CLASSES,
                   image_shape: tuple[int, int, int] = SYNTHETIC_IMAGE_SHAPE, noise: float = 1.0, seed: int = 0,
                   device: torch.device | str = "cpu") -> Dataset:
    """A small, learnable, deterministic stand-in for MNIST, for fast tests.

    Each class has a fixed random smooth prototype image (a sum of a few 2-D Gaussian blobs); a sample is its
    class prototype plus i.i.d. Gaussian pixel noise of std ``noise``. Normalised to zero mean, unit variance.
    """
    if n_train < 1 or n_test < 1 or n_classes < 2:
        raise ValueError(f"synthetic: need n_train ≥ 1, n_test ≥ 1, n_classes ≥ 2, got {n_train}, {n_test}, "
                         f"{n_classes}")
    g = torch.Generator().manual_seed(seed)
    c, h, w = image_shape
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    centres = torch.rand(n_classes, c, 4, 2, generator=g)
    signs = torch.randint(0, 2, (n_classes, c, 4), generator=g).float() * 2 - 1
    d2 = (yy - centres[..., 0, None, None]) ** 2 + (xx - centres[..., 1, None, None]) ** 2
    protos = (signs[..., None, None] * torch.exp(-d2 / 0.02)).sum(2)  # [classes, c, h, w]
    protos = 2.0 * protos / protos.flatten(1).norm(dim=1).clamp_min(1e-6)[:, None, None, None] * math.sqrt(h * w) / 4

    def split(n: int) -> Split:
        y = torch.randint(0, n_classes, (n,), generator=g)
        x = protos[y] + noise * torch.randn(n, c, h, w, generator=g)
        return Split(x, y)

    train, test = split(n_train), split(n_test)
    mean, std = train.x.mean(), train.x.std()
    train, test = (Split(((s.x - mean) / std).to(device), s.y.to(device)) for s in (train, test))
    return Dataset(SYNTHETIC, train, test, n_classes)


def load_dataset(name: str, root: str | os.PathLike[str] | None = None,
                 device: torch.device | str = "cpu", seed: int = 0) -> Dataset:
    """Load a data set by name: ``mnist``, ``fashion-mnist`` (real, from the cache) or ``synthetic``."""
    if name == SYNTHETIC:
        return make_synthetic(seed=seed, device=device)
    if name not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(DATASET_NAMES)}"
                         f"{did_you_mean(name, DATASET_NAMES)}")
    return load_real(name, root, device)



class DatasetCache:
    """The data sets of several runs, each loaded once (:func:`load_dataset`) and shared by the runs that read the
    same one: keyed by its name, data folder and device and, for the ``synthetic`` set only, the seed it is
    generated from — a run's own ``seed``, as ``train`` and ``sweep`` generate it, so that a run gives the numbers
    of its recorded config whichever command trained it (a real set is the same files whatever the seed)."""

    def __init__(self) -> None:
        self._sets: dict[tuple[str, str | None, str, int | None], Dataset] = {}

    def get(self, name: str, root: str | os.PathLike[str] | None, device: torch.device | str, seed: int) -> Dataset:
        """The data set :func:`load_dataset` ``(name, root, device, seed)`` gives, loaded on first use."""
        key = (name, None if root is None else os.fspath(root), str(device), seed if name == SYNTHETIC else None)
        if key not in self._sets:
            self._sets[key] = load_dataset(name, root, device, seed)
        return self._sets[key]

    def for_config(self, cfg: Any) -> Dataset:
        """The data set a run of ``cfg`` (a :class:`~imc_grapes.config.TrainConfig`) trains on: its ``dataset``,
        ``data_root``, resolved device and ``seed``."""
        return self.get(cfg.dataset, cfg.data_root, cfg.resolved_device(), cfg.seed)


def recorded_data_root(name: str, root: str | os.PathLike[str] | None = None) -> str | None:
    """The absolute folder :func:`load_dataset` ``(name, root)`` reads the data set's cache from
    (:func:`~imc_grapes.data.cache.resolved_data_root`), as a results file records it; None for ``synthetic``
    (generated, read from no folder) and for an empty ``root`` (it names no folder; loading it fails)."""
    if name == SYNTHETIC:
        return None
    try:
        return str(resolved_data_root(root))
    except DatasetError:
        return None

class BatchLoader:
    """Shuffled mini-batches drawn straight from tensors on their device (much faster than a DataLoader for
    data that already sits in memory). The order is set by a seeded ``torch.Generator``, so two loaders with
    the same seed give the same batches — the same data order for every optimizer in a comparison.

    Yields ``(x: [batch, C, H, W], y: [batch])``; the last batch may be smaller unless ``drop_last``.
    """

    def __init__(self, split: Split, batch_size: int, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
        if drop_last and len(split) < batch_size:
            raise ValueError(f"drop_last leaves no batch: {len(split)} samples < batch_size {batch_size}; "
                             "use a smaller batch or keep the partial batch")
        self.split, self.batch_size, self.shuffle, self.drop_last = split, batch_size, shuffle, drop_last
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        n = len(self.split)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.split)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        order = order.to(self.split.x.device)
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            yield self.split.x[idx], self.split.y[idx]


def as_dataloader(split: Split, batch_size: int, shuffle: bool = True, seed: int = 0) -> DataLoader:
    """The split as a standard ``torch.utils.data.DataLoader`` (for code that expects one)."""
    return DataLoader(TensorDataset(split.x, split.y), batch_size=batch_size, shuffle=shuffle,
                      generator=torch.Generator().manual_seed(seed))
