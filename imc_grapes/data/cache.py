"""Where data sets live on disk and how their integrity is checked."""
from __future__ import annotations

import hashlib
import os
import shlex
from pathlib import Path

from ..io import file_in_the_way
from .registry import DatasetSpec

ENV_VAR = "IMC_GRAPES_DATA"


class DatasetError(RuntimeError):
    """Base class of data-set errors; the message always says what to run next."""


class DatasetNotFoundError(DatasetError):
    """A data set's files are not in the cache folder."""


class ChecksumError(DatasetError):
    """A data set file exists but its size or md5 is not the documented one."""


def data_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The cache folder: ``root`` if given, else ``$IMC_GRAPES_DATA``, else ``$XDG_CACHE_HOME/imc-grapes/data``
    (``~/.cache/imc-grapes/data`` when ``XDG_CACHE_HOME`` is unset).

    Raises:
        DatasetError: ``root`` is an empty path (it would silently mean the current folder).
    """
    if root is not None:
        if not os.fspath(root).strip():
            raise DatasetError("the data root is an empty path (--data-root / --root ''): give a folder, or leave the "
                               f"option out for ${ENV_VAR} or ${{XDG_CACHE_HOME:-~/.cache}}/imc-grapes/data")
        return Path(root).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "imc-grapes" / "data"


def resolved_data_root(root: str | os.PathLike[str] | None = None) -> Path:
    """:func:`data_root` as an absolute path, ``..`` and symbolic links resolved against the current folder: what a
    result records (a relative ``--data-root data`` names another folder once the results are moved).

    Raises:
        DatasetError: ``root`` is an empty path (:func:`data_root`).
    """
    return data_root(root).resolve()


def dataset_dir(spec: DatasetSpec, root: str | os.PathLike[str] | None = None) -> Path:
    return data_root(root) / spec.name


def md5_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def fetch_hint(spec: DatasetSpec, root: str | os.PathLike[str] | None = None) -> str:
    """The command that fetches ``spec`` into ``root``, quoted for a shell (a root with spaces stays one argument)."""
    extra = f" --root {shlex.quote(os.fspath(root))}" if root is not None else ""
    return f"imc-grapes data fetch {spec.name}{extra}"


def _elsewhere_hint(spec: DatasetSpec, root: str | os.PathLike[str] | None) -> str:
    """How to use a copy of the data set kept elsewhere: ``$IMC_GRAPES_DATA`` only counts when no root is given."""
    where = f"the folder that holds its {spec.name!r} folder"
    return f"set {ENV_VAR} to {where}" if root is None else f"give {where} as the data root"


def _unreadable(spec: DatasetSpec, path: Path, exc: OSError, root: str | os.PathLike[str] | None) -> DatasetError:
    """The error for a data set's file or folder ``path`` that this user cannot read."""
    return DatasetError(f"dataset {spec.name!r}: cannot read {path}: {exc.strerror or exc}. Make it readable by this "
                        f"user (or {_elsewhere_hint(spec, root)} with a readable copy).")


def check_folder_path(spec: DatasetSpec, folder: Path, root: str | os.PathLike[str] | None) -> None:
    """Raise :class:`DatasetError` when the nearest existing one of ``folder`` and its parents is not a folder
    (e.g. the data root names a file): the data set can then neither be found nor fetched there."""
    path = file_in_the_way(folder)
    if path is not None and path.exists():     # a broken link: a missing data set, reported as such
        raise DatasetError(f"dataset {spec.name!r}: {path} is a file, not a folder, so {folder} cannot hold "
                           f"the data set; {_elsewhere_hint(spec, root)} (or move that file away)")


def check_no_folder_in_way(spec: DatasetSpec, folder: Path, root: str | os.PathLike[str] | None) -> None:
    """Raise :class:`DatasetError` when a folder stands in ``folder`` where one of ``spec``'s files should be (named,
    with what to do): the data set is not "missing" then, and a fetch would download only to fail writing that
    file. :func:`verify` and, before any download, :func:`~imc_grapes.data.sources.fetch` check this.

    Raises:
        DatasetError: such a folder is there, or ``folder`` cannot be read (its permissions; the message names it).
    """
    try:
        in_way = [folder / f.name for f in spec.files if (folder / f.name).is_dir()]
    except OSError as exc:      # e.g. a folder on the way that this user may not enter
        raise _unreadable(spec, folder, exc, root) from exc
    if in_way:
        one = len(in_way) == 1
        raise DatasetError(
            f"dataset {spec.name!r}: {' and '.join(map(str, in_way))} {'is a folder' if one else 'are folders'} "
            f"where the data set's {'file' if one else 'files'} should be; move what is in "
            f"{'its' if one else 'their'} way, then run `{fetch_hint(spec, root)}` for what is missing (or "
            f"{_elsewhere_hint(spec, root)})."
        )


def verify(spec: DatasetSpec, root: str | os.PathLike[str] | None = None) -> Path:
    """Check that all four files are present with the documented size and md5; return the folder.

    Raises:
        DatasetNotFoundError: a file is missing (the message names the fetch command).
        ChecksumError: a file has the wrong size or md5 (the message names the file and the fetch command).
        DatasetError: a file or the folder cannot be read (e.g. its permissions; the message names it), the
            data root or the data set's folder is a file, or a folder stands where a file should be (the message
            names it).
    """
    folder = dataset_dir(spec, root)
    try:
        check_folder_path(spec, folder, root)
        check_no_folder_in_way(spec, folder, root)      # not "missing", with advice to a fetch that would fail
        missing = [f.name for f in spec.files if not (folder / f.name).is_file()]
        zipped = [name + ".gz" for name in missing if (folder / (name + ".gz")).is_file()]
    except OSError as exc:      # e.g. a folder on the way that this user may not enter
        raise _unreadable(spec, folder, exc, root) from exc
    if missing:
        gz_hint = (f" {folder} holds {', '.join(zipped)}: the cache keeps the IDX files uncompressed, so gunzip "
                   "them there instead." if zipped else "")
        raise DatasetNotFoundError(
            f"dataset {spec.name!r} not found in {folder} (missing: {', '.join(missing)}). "
            f"Run `{fetch_hint(spec, root)}` to obtain it (or {_elsewhere_hint(spec, root)}).{gz_hint}"
        )
    for f in spec.files:
        path = folder / f.name
        try:
            size = path.stat().st_size
            digest = md5_file(path) if size == f.size else ""
        except OSError as exc:
            raise _unreadable(spec, path, exc, root) from exc
        if size != f.size:
            raise ChecksumError(
                f"dataset {spec.name!r}: {path} has {size} bytes, expected {f.size} (truncated or wrong file). "
                f"Delete it and run `{fetch_hint(spec, root)}`."
            )
        if digest != f.md5:
            raise ChecksumError(
                f"dataset {spec.name!r}: md5 of {path} is {digest}, expected {f.md5} (corrupt or changed file). "
                f"Delete it and run `{fetch_hint(spec, root)}`."
            )
    return folder
