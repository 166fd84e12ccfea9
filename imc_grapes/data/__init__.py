"""Real data sets (MNIST, Fashion-MNIST) from md5-checked IDX files, a synthetic set for tests, and loaders."""
from .cache import ChecksumError, DatasetError, DatasetNotFoundError, data_root, resolved_data_root, verify
from .datasets import (BatchLoader, Dataset, DatasetCache, Split, as_dataloader, load_dataset, load_real,
                       make_synthetic, recorded_data_root)
from .sources import SOURCES, fetch
from .idx import parse_idx, read_idx
from .registry import DATASET_NAMES, FASHION_MNIST, MNIST, REAL_DATASETS, DatasetSpec, get_spec

__all__ = [
    "BatchLoader", "ChecksumError", "DATASET_NAMES", "Dataset", "DatasetCache", "DatasetError",
    "DatasetNotFoundError", "DatasetSpec", "FASHION_MNIST", "MNIST", "REAL_DATASETS", "SOURCES", "Split",
    "as_dataloader", "data_root", "fetch", "get_spec", "load_dataset", "load_real", "make_synthetic", "parse_idx",
    "read_idx", "recorded_data_root", "resolved_data_root", "verify",
]
