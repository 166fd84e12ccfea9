"""Sweep specs: a base experiment plus axes over any config field, expanded into validated points.

A spec file (TOML)::

    [sweep]
    name = "dw_min"                  # default: the file name without .toml
    out = "runs/sweeps/dw_min"       # default: runs/sweeps/<name> (relative to the current folder)
    reference = true                 # also run each point on ideal digital weights (the reference line)
    # base_from = "runs/train/x/results.json"   # start from a finished run's config (then [base] overrides)

    [base]                           # TrainConfig fields; [base.analog], [base.periphery], [base.device]
    dataset = "synthetic"
    backend = "crossbar"

    [axes]                           # a list = grid axis; a range table = sampled axis (needs [sample])
    device.dw_min = [0.001, 0.003, 0.01]
    optimizer = ["sgd", "grapes"]
    seed = [0, 1, 2]
    # periphery.adc_bits = { int_uniform = [4, 8] }    # uniform | log_uniform | int_uniform | choice

    [sample]                         # only with range axes: n random draws (seeded), crossed with the grid
    n = 20
    seed = 0

Points are the product of the grid axes (first axis outermost), crossed with the ``n`` samples of the range
axes (samples outermost). Every point's :class:`~imc_grapes.config.TrainConfig` is built — i.e. validated by the
same config classes as everywhere else — when the points are listed, before anything runs.

A digital point (``backend = "digital"``) ignores the analog hardware, so its analog settings are reset to the
base's and its hardware axes are reported as not applicable; identical points are merged. It keeps its own
``analog.energy_table`` (:data:`~imc_grapes.config.DIGITAL_ANALOG_FIELDS`), which prices a digital run's operations
too. With ``reference = true`` each analog point gets a digital twin (same config, ``backend = "digital"``).
When every point is digital, an analog setting or ``inference_times`` that the file's own ``[base]`` writes is
refused as having no effect; those that ``[sweep] base_from`` brings in (a digital baseline of an analog run) are
kept.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import json
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser as the tomli package
    import tomli as tomllib  # type: ignore[no-redef]

from ..backends.optim import MOMENTUM_BASE_OPTIMIZERS
from ..backends.settings import AnalogSettings
from ..config import (DIGITAL_ANALOG_FIELDS, GRAPES_OPTIMIZERS, SEED_RANGE, ConfigError, TrainConfig, check_distinct,
                      check_seeds_apart, identity_dict, is_int, seed_in_range)
from ..suggest import did_you_mean, did_you_mean_each
from ..train import tail_evals_error
from .paths import SECTIONS, FieldPath, SpecError, resolve_path, set_path

#: kinds of sampled axes: ``{uniform = [lo, hi]}``, ``{log_uniform = [lo, hi]}``, ``{int_uniform = [lo, hi]}``
#: (both ends included), ``{choice = [v1, v2, ...]}``
RANGE_KINDS: tuple[str, ...] = ("uniform", "log_uniform", "int_uniform", "choice")
SPEC_TABLES: tuple[str, ...] = ("sweep", "base", "axes", "sample")
SWEEP_KEYS: tuple[str, ...] = ("name", "out", "reference", "base_from", "tail_evals")
SAMPLE_KEYS: tuple[str, ...] = ("n", "seed")
#: sampled floats are rounded to this many significant digits (readable folder listings and CSV columns)
SAMPLE_DIGITS = 6
#: the most points (samples × grid, before digital twins) a spec may list: every point's config is built and
#: validated up front (about 0.3 ms each), so a mistyped ``[sample] n`` would otherwise exhaust the memory
MAX_POINTS = 1_000_000
#: the path of a ``backend`` axis (a digital twin reports ``digital`` on it)
BACKEND_PATH = FieldPath("backend", "train", "backend")
#: why ``analog.out_noise`` has no effect with ``analog.ideal_periphery = true`` (the command line's wording)
IDEAL_PERIPHERY_WHY = "makes every MVM exact (no DAC, ADC or output noise)"


def _as_spec_error(check: Callable[..., None], *args: Any) -> None:
    """``check(*args)`` (a list check of :mod:`imc_grapes.config`), its ``ConfigError`` raised as a
    :class:`SpecError` with the same message."""
    try:
        check(*args)
    except ConfigError as exc:
        raise SpecError(str(exc)) from None


def _spec_value(v: Any) -> str:
    """``v`` as a message names a field's value: floats as ``%g`` (``0.1``), booleans as TOML writes them
    (``true``), anything else as its ``repr``."""
    if isinstance(v, bool):
        return "true" if v else "false"
    return f"{v:g}" if isinstance(v, float) else repr(v)


def _field_name(path: FieldPath) -> str:
    """The one name of the field ``path`` addresses, whatever spelling resolved to it: ``lr``, ``analog.dac_bits``
    (also for ``periphery.dac_bits``), ``device.dw_min`` (also for ``analog.device_overrides.dw_min``)."""
    return path.field if path.section == "train" else f"{path.section}.{path.field}"


def _field_paths(names: Any) -> tuple[str, ...]:
    """:attr:`SweepSpec.base_fields` checked (a list of field paths) and spelled by :func:`_field_name`."""
    if not (isinstance(names, (list, tuple)) and all(isinstance(n, str) for n in names)):
        raise SpecError(f"SweepSpec.base_fields must be None or a list of field paths (e.g. 'lr', "
                        f"'analog.dac_bits', 'device.dw_min'), got {names!r}")
    try:
        return tuple(dict.fromkeys(_field_name(resolve_path(n)) for n in names))
    except SpecError as exc:
        raise SpecError(f"SweepSpec.base_fields: {exc}") from None


def _no_effect_error(axes: Sequence[str], fields: Sequence[tuple[str, Any, Any]], because: str,
                     instead: str) -> SpecError:
    """The :class:`SpecError` for settings of a spec that no point reads (the spec's form of the command line's
    refusal of an option without effect): ``axes`` names the axes that set them, ``fields`` the ``[base]`` fields,
    as (path, value, default); ``because`` says why they change nothing, ``instead`` how to make them matter (it
    follows "drop it, or ")."""
    what = [f"axis {a!r}" for a in axes] + [f"[base] {path} = {_spec_value(v)}" for path, v, _ in fields]
    one = len(what) == 1
    thing = ("the axis" if axes else "this field") if one else "these settings" if axes and fields else \
        "these axes" if axes else "these fields"
    defaults = ", ".join(_spec_value(d) for *_, d in fields)
    fixes = []
    if axes:
        fixes.append("drop " + ("it" if one else "them" if not fields else "the axis" if len(axes) == 1 else
                                "the axes"))
    if fields:
        fixes.append(("leave it at its default" if one else "leave them at their defaults" if not axes else
                      "leave the field at its default" if len(fields) == 1 else "leave the fields at their defaults")
                     + f" ({defaults})")
    return SpecError(f"{', '.join(what)}: {because}, so {thing} would change nothing: {' and '.join(fixes)}, or "
                     f"{instead}")


@dataclass(frozen=True)
class Range:
    """A sampled axis: ``kind`` in :data:`RANGE_KINDS` with its arguments (``[lo, hi]`` or the choices)."""

    kind: str
    args: tuple[Any, ...]

    def __post_init__(self) -> None:
        k = self.kind
        if not isinstance(k, str) or k not in RANGE_KINDS:
            raise SpecError(f"Range.kind must be one of {', '.join(RANGE_KINDS)}, got {k!r}"
                            f"{did_you_mean(k, RANGE_KINDS)}")
        if not isinstance(self.args, (list, tuple)):
            raise SpecError(f"Range {k} must be a list ({'the choices' if k == 'choice' else '[lo, hi]'}), "
                            f"got {self.args!r}")
        object.__setattr__(self, "args", tuple(self.args))
        a = self.args
        if k == "choice":
            if not a:
                raise SpecError("Range choice must list at least one value, got []")
            _as_spec_error(check_distinct, "Range choice", a)   # a repeated value is drawn twice as often
            return
        if len(a) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in a):
            raise SpecError(f"Range {k} must be [lo, hi] (two numbers), got {list(a)}")
        lo, hi = a
        if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
            raise SpecError(f"Range {k} needs finite lo ≤ hi, got {list(a)}")
        if k == "log_uniform" and lo <= 0:
            raise SpecError(f"Range log_uniform needs 0 < lo ≤ hi, got {list(a)}")
        if k == "int_uniform" and not all(isinstance(v, int) for v in a):
            raise SpecError(f"Range int_uniform needs integer bounds, got {list(a)}")

    def value(self, u: float) -> Any:
        """The value at quantile ``u`` ∈ [0, 1) of the range (floats rounded to :data:`SAMPLE_DIGITS` digits)."""
        k, a = self.kind, self.args
        if k == "choice":
            return a[min(int(u * len(a)), len(a) - 1)]
        if k == "int_uniform":
            return int(a[0] + min(int(u * (a[1] - a[0] + 1)), a[1] - a[0]))
        if k == "uniform":
            v = a[0] + u * (a[1] - a[0])
        else:
            v = math.exp(math.log(a[0]) + u * (math.log(a[1]) - math.log(a[0])))
        return float(f"{v:.{SAMPLE_DIGITS}g}")

    def to_dict(self) -> dict[str, list[Any]]:
        return {self.kind: list(self.args)}


@dataclass(frozen=True)
class Axis:
    """One swept field: a grid axis (``values``) or a sampled axis (``range``)."""

    path: FieldPath
    values: tuple[Any, ...] | None = None
    range: Range | None = None

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def sampled(self) -> bool:
        return self.range is not None

    def to_dict(self) -> Any:
        return self.range.to_dict() if self.range is not None else [_plain(v) for v in self.values or ()]


@dataclass(frozen=True)
class Point:
    """One run of a sweep.

    Attributes:
        id: 12 hex digits of the SHA-1 of the point's canonical config (its folder name; same config ->
            same id, so a resumed or extended sweep finds its finished points).
        params: swept axis name -> value (in axis order); None for hardware axes of a digital point.
        config: the validated training config.
        reference: True for the digital twins added by ``reference = true``.
        legacy_ids: the other ids that earlier versions gave this point (:func:`legacy_config_id`: its config with
            a device override at the preset's own value, which :func:`config_id` now leaves out), one per such
            spelling of it in the spec: a sweep folder written by those versions holds its result under one of them
            (:meth:`~imc_grapes.sweep.store.SweepStore.find_legacy`). Empty for most points.
        merged_params: the params of the other combinations of axis values that denote this same analog point and
            were merged into it (two spellings of one device in a whole ``analog.device_overrides`` table axis, e.g.
            ``{}`` and ``{dw_min = 0.002}`` on ReRamSB, whose dw_min is 0.002), for :func:`merged_values` to say.
            Empty for most points (and for digital ones, whose merging of hardware values is by design).
    """

    id: str
    params: dict[str, Any]
    config: TrainConfig
    reference: bool = False
    legacy_ids: tuple[str, ...] = ()
    merged_params: tuple[dict[str, Any], ...] = ()

    def label(self) -> str:
        """Human-readable ``axis=value`` list, e.g. ``device.dw_min=0.001 optimizer=sgd seed=0``."""
        parts = [f"{k}={_fmt_value(v)}" for k, v in self.params.items() if v is not None]
        if self.config.backend == "digital" and any(v is None for v in self.params.values()):
            parts.append("[digital]")
        return " ".join(parts) or "(base)"


def _fmt_value(v: Any) -> str:
    """``v`` as labels, tables and plot ticks show a swept value: floats as ``%g``, booleans as the spec writes them
    (``true``, not Python's ``True``), lists as ``[a,b]``."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_fmt_value(x) for x in v) + "]"
    return str(v)


def _plain(v: Any) -> Any:
    """JSON-friendly copy (tuples -> lists)."""
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    return v


def _hash_id(identity: dict[str, Any]) -> str:
    """12 hex digits of the SHA-1 of ``identity``'s canonical JSON (sorted keys, no spaces)."""
    blob = json.dumps(identity, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def config_id(cfg: TrainConfig) -> str:
    """12 hex digits of the SHA-1 of ``cfg``'s canonical JSON (sorted keys; config fields added later are left out
    while they hold their earlier-behaviour value, and device overrides while they hold the preset's own value:
    :func:`~imc_grapes.config.identity_dict`)."""
    return config_dict_id(cfg.to_dict())


def config_dict_id(config: dict[str, Any]) -> str:
    """:func:`config_id` of a config as a dict: a :meth:`TrainConfig.to_dict`, or the ``config`` a point's
    ``point.json`` recorded (read back from JSON: the same id as the config it was written from). The id this version
    gives that config, whatever version wrote it (:meth:`~imc_grapes.sweep.store.SweepStore.find_legacy`)."""
    return _hash_id(identity_dict(config))


def legacy_config_id(cfg: TrainConfig) -> str:
    """The id that versions before device overrides at the preset's value were left out gave ``cfg``
    (:func:`config_id` with every override kept): the folder name of its point in a sweep folder they wrote. Equal to
    :func:`config_id` for a config without such an override."""
    return _hash_id(identity_dict(cfg.to_dict(), device_defaults=False))


def _float_fields(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls) if f.type in ("float", "float | None")}


def _coerce(config: dict[str, Any]) -> dict[str, Any]:
    """Ints written for float fields become floats (``lr = 1`` and ``lr = 1.0`` are the same point)."""
    def fix(d: dict[str, Any], names: set[str]) -> None:
        for k in names & set(d):
            if isinstance(d[k], int) and not isinstance(d[k], bool):
                d[k] = float(d[k])

    fix(config, _float_fields(TrainConfig))
    analog = config.get("analog")
    if isinstance(analog, dict):
        fix(analog, _float_fields(AnalogSettings))
        overrides = analog.get("device_overrides")
        if isinstance(overrides, dict):
            for k, v in overrides.items():  # device parameters are floats in every device model
                if isinstance(v, int) and not isinstance(v, bool):
                    overrides[k] = float(v)
    return config


def _build(config: dict[str, Any], where: str) -> TrainConfig:
    try:
        return TrainConfig.from_dict(_coerce(copy.deepcopy(config)))
    except (ConfigError, ValueError, TypeError) as exc:
        raise SpecError(f"{where}: {exc}") from None


@dataclass(frozen=True)
class SweepSpec:
    """A base experiment and the axes swept around it.

    Attributes:
        base: the config every point starts from.
        axes: swept fields, in order (the first grid axis varies slowest).
        name: the sweep's name (status lines, report titles, default output folder).
        n_samples: random draws of the sampled (range) axes; 0 without range axes.
        sample_seed: seed of the ``torch.Generator`` drawing the samples.
        reference: add a digital twin of every analog point (ideal-digital reference line).
        out: default output folder (None: ``runs/sweeps/<name>``).
        tail_evals: the reports' accuracy of a point is the mean of its last ``tail_evals`` evaluations
            (``tail_test_acc``; default 1: the final evaluation, ``final_test_acc``). Not part of any point's
            identity: changing it re-reports finished points, it re-runs nothing.
        base_fields: the fields that the spec file's own ``[base]`` table writes, as paths (``lr``,
            ``analog.dac_bits``, ``device.dw_min``; :func:`parse_spec` fills it in), so that a setting which
            ``[sweep] base_from`` brought in (an analog run's saved config under a digital baseline) is not refused
            as having no effect: the user did not write it. None (a spec built in code): every field of ``base``
            counts as written. Not part of any point's identity.
    """

    base: TrainConfig = field(default_factory=TrainConfig)
    axes: tuple[Axis, ...] = ()
    name: str = "sweep"
    n_samples: int = 0
    sample_seed: int = 0
    reference: bool = False
    out: str | None = None
    tail_evals: int = 1
    base_fields: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.base, TrainConfig):
            raise SpecError(f"SweepSpec.base must be a TrainConfig, got {self.base!r}")
        if not (isinstance(self.axes, (list, tuple)) and all(isinstance(ax, Axis) for ax in self.axes)):
            raise SpecError(f"SweepSpec.axes must be a list of Axis (parse_axes builds them from [axes]), "
                            f"got {self.axes!r}")
        object.__setattr__(self, "axes", tuple(self.axes))
        if self.base_fields is not None:
            object.__setattr__(self, "base_fields", _field_paths(self.base_fields))
        default_noise = AnalogSettings().out_noise
        if (self.base.analog.ideal_periphery and self.base.analog.out_noise != default_noise
                and self._written("analog.out_noise")):      # not when base_from alone brought it in
            raise _no_effect_error([], [("analog.out_noise", self.base.analog.out_noise, default_noise)],
                                   f"analog.ideal_periphery = true {IDEAL_PERIPHERY_WHY}",
                                   "set ideal_periphery = false")
        if (msg := tail_evals_error(self.tail_evals)) is not None:
            raise SpecError(f"[sweep] {msg}")
        if not isinstance(self.name, str) or not self.name or "/" in self.name or self.name in (".", ".."):
            # it names the default folder runs/sweeps/<name>: '..' would be runs/ itself
            raise SpecError(f"[sweep] name must be a non-empty name without '/', not '.' or '..' (the default folder "
                            f"is runs/sweeps/<name>), got {self.name!r}")
        if not isinstance(self.reference, bool):
            raise SpecError(f"[sweep] reference must be true or false, got {self.reference!r}")
        if not (self.out is None or (isinstance(self.out, str) and self.out)):
            raise SpecError(f"[sweep] out must be a non-empty string (a path), got {self.out!r}")
        seen: dict[tuple[str, str], str] = {}
        for ax in self.axes:
            key = (ax.path.section, ax.path.field)
            if key in seen:
                raise SpecError(f"axes {seen[key]!r} and {ax.name!r} set the same field; keep one")
            seen[key] = ax.name
            if (ax.values is None) == (ax.range is None):
                raise SpecError(f"axis {ax.name!r} needs either a list of values or a range")
            if ax.values is not None and len(ax.values) == 0:
                raise SpecError(f"axis {ax.name!r} has no values; give at least one")
            if ax.values is not None:
                _as_spec_error(check_distinct, f"axis {ax.name!r}", ax.values)   # a repeated value: one point twice
                if key == ("train", "seed"):
                    _as_spec_error(check_seeds_apart, f"axis {ax.name!r}", ax.values)
        whole = [ax.name for ax in self.axes if (ax.path.section, ax.path.field) == ("analog", "device_overrides")]
        entries = [ax.name for ax in self.axes if ax.path.section == "device"]
        if whole and entries:   # the table would replace (or take) the entries: points silently merged or mislabelled
            raise SpecError(f"axes {whole[0]!r} and {entries[0]!r} set the same field (the whole device_overrides "
                            "table and one of its entries); keep one")
        sampled = [ax.name for ax in self.axes if ax.sampled]
        if not is_int(self.n_samples) or self.n_samples < 0:
            raise SpecError(f"[sample] n must be an integer ≥ 1, got {self.n_samples!r}")
        if not (is_int(self.sample_seed) and seed_in_range(self.sample_seed)):
            raise SpecError(f"[sample] seed must be an integer in {SEED_RANGE}, got {self.sample_seed!r}")
        if sampled and self.n_samples == 0:
            raise SpecError(f"axes {sampled} are ranges (sampled): add a [sample] table with n = <draws> "
                            "(and seed = <int>), or give them as lists of values for a grid")
        if self.n_samples and not sampled:
            raise SpecError("[sample] is given but no axis is a range; write sampled axes as "
                            "{uniform|log_uniform|int_uniform|choice = [...]}")
        grid = [len(ax.values) for ax in self.axes if ax.values is not None]
        count = max(self.n_samples, 1) * math.prod(grid)
        if count > MAX_POINTS:     # each one is built and validated before anything runs
            sizes = ([f"{self.n_samples} samples"] if self.n_samples else []) + [str(n) for n in grid]
            raise SpecError(f"the sweep has {count} points ({' × '.join(sizes)}), more than the {MAX_POINTS} a "
                            "spec may list; use fewer samples ([sample] n) or shorter axes, or split the sweep")

    @property
    def out_dir(self) -> Path:
        return Path(self.out) if self.out else Path("runs") / "sweeps" / self.name

    def samples(self) -> list[dict[str, Any]]:
        """The ``n_samples`` draws of the sampled axes (same seed -> same draws); ``[{}]`` without any."""
        sampled = [ax for ax in self.axes if ax.range is not None]
        if not sampled:
            return [{}]
        g = torch.Generator().manual_seed(self.sample_seed)
        u = torch.rand(self.n_samples, len(sampled), generator=g, dtype=torch.float64).tolist()
        return [{ax.name: ax.range.value(row[j]) for j, ax in enumerate(sampled)}  # type: ignore[union-attr]
                for row in u]

    def repeated_draws(self) -> int:
        """How many of the ``n_samples`` draws repeat an earlier draw's values (sampled axes whose values are few:
        ``int_uniform`` or ``choice``): a repeated draw is the same point, which :meth:`points` lists (and a sweep
        runs) once, so the sweep has fewer points than draws (:func:`repeated_draws_note`). 0 without sampled
        axes."""
        draws = self.samples()
        return len(draws) - len({json.dumps(_plain(d), sort_keys=True) for d in draws}) if self.n_samples else 0

    def _raw_points(self) -> Iterator[dict[str, Any]]:
        grid = [(ax.name, ax.values) for ax in self.axes if ax.values is not None]
        order = [ax.name for ax in self.axes]
        for sample in self.samples():
            for combo in itertools.product(*(values for _, values in grid)):
                params = {**sample, **{name: v for (name, _), v in zip(grid, combo)}}
                yield {k: params[k] for k in order}

    def points(self, max_errors: int = 5) -> list[Point]:
        """All points, each with a validated config; raises :class:`SpecError` listing the invalid ones."""
        base = self.base.to_dict()
        by_name = {ax.name: ax.path for ax in self.axes}
        points: dict[str, Point] = {}
        errors: list[str] = []
        n_raw = 0

        def add(params: dict[str, Any], reference: bool, force_digital: bool = False) -> Point | None:
            cfg_dict = base
            for name, value in params.items():
                cfg_dict = set_path(cfg_dict, by_name[name], value)
            if force_digital:
                cfg_dict = {**cfg_dict, "backend": "digital"}
            if cfg_dict.get("backend") == "digital":
                # the analog hardware is ignored on digital weights: one point per distinct digital config (but
                # for the analog settings a digital run uses too: the point's energy table prices its operations)
                kept = {k: cfg_dict["analog"][k] for k in DIGITAL_ANALOG_FIELDS if k in cfg_dict["analog"]}
                cfg_dict = {**cfg_dict, "analog": {**base["analog"], **kept}}
                # a twin's backend axis value is its analog point's: it names the backend the point runs on
                params = {k: (None if by_name[k].is_hardware else "digital" if by_name[k] == BACKEND_PATH else v)
                          for k, v in params.items()}
            label = " ".join(f"{k}={_fmt_value(v)}" for k, v in params.items()) or "(base)"
            try:
                cfg = _build(cfg_dict, f"sweep {self.name!r}, point {label}")
            except SpecError as exc:
                errors.append(str(exc))
                return None
            if (msg := tail_evals_error(self.tail_evals, "[sweep] tail_evals", cfg)) is not None:
                errors.append(f"sweep {self.name!r}, point {label}: {msg}")
                return None
            pid = config_id(cfg)
            # the id of earlier versions differs only with device overrides (most configs have none: no second hash)
            old = legacy_config_id(cfg) if cfg.analog.device_overrides else pid
            if pid not in points:
                points[pid] = Point(pid, params, cfg, reference, legacy_ids=(old,) if old != pid else ())
                return points[pid]
            if old != pid and old not in points[pid].legacy_ids:     # merged: a spelling with another earlier id
                points[pid] = dataclasses.replace(points[pid], legacy_ids=(*points[pid].legacy_ids, old))
            first = points[pid]     # another spelling: noted for an analog point (merged_values), by design digital
            if cfg.backend != "digital" and params != first.params and params not in first.merged_params:
                points[pid] = dataclasses.replace(first, merged_params=(*first.merged_params, params))
            return points[pid]

        for params in self._raw_points():
            n_raw += 1
            p = add(params, False)
            if self.reference and p is not None and p.config.backend != "digital":
                add(params, True, force_digital=True)
        if errors:
            more = f"\n  ... and {len(errors) - max_errors} more invalid point(s)" if len(errors) > max_errors else ""
            raise SpecError(f"{len(errors)} of {n_raw} point(s) are invalid:\n  " + "\n  ".join(errors[:max_errors])
                            + more)
        hw = [ax.name for ax in self.axes if ax.path.is_hardware]
        if hw and all(p.config.backend == "digital" for p in points.values()):
            raise SpecError(f"axes {hw} only affect the analog backends, but every point is digital "
                            f"(backend = 'digital'); set backend = 'crossbar' (or 'aihwkit') in [base]")
        noise, base_noise = self._set_fields("analog", ("out_noise",))
        analog = [p.config.analog for p in points.values() if p.config.backend != "digital"]
        if (noise or base_noise) and analog and all(a.ideal_periphery for a in analog):
            # out_noise is set, by an axis (one run repeated per value) or [base], and no analog point reads it (an
            # axis over ideal_periphery = [true]; [base] with both is refused by __post_init__)
            raise _no_effect_error(noise, base_noise, "every analog point has analog.ideal_periphery = true, which "
                                   f"{IDEAL_PERIPHERY_WHY}", "give some analog points ideal_periphery = false (e.g. "
                                   "an axis periphery.ideal_periphery = [false, true])")
        self._check_optimizer_fields(list(points.values()))
        self._check_digital_fields(list(points.values()))
        return list(points.values())

    def _set_fields(self, section: str, names: Sequence[str]) -> tuple[list[str], list[tuple[str, Any, Any]]]:
        """Where the spec sets the fields ``names`` of ``section`` (``train``: TrainConfig, ``analog``:
        AnalogSettings): the names of the axes over them, and the ``[base]`` fields that the spec file writes
        (:meth:`_written`: not those ``base_from`` alone brought in), that hold other than their defaults and that no
        axis sets, as (path, value, default)."""
        axes = [ax.name for ax in self.axes if ax.path.section == section and ax.path.field in names]
        swept = {ax.path.field for ax in self.axes if ax.path.section == section}
        base, default = (self.base, TrainConfig()) if section == "train" else (self.base.analog, AnalogSettings())
        prefix = "" if section == "train" else f"{section}."
        fields = [(prefix + n, getattr(base, n), getattr(default, n)) for n in names
                  if n not in swept and getattr(base, n) != getattr(default, n) and self._written(prefix + n)]
        return axes, fields

    def _written(self, name: str) -> bool:
        """Whether the spec file's own ``[base]`` writes the field ``name`` (:func:`_field_name`'s spelling), not
        ``base_from`` alone (:attr:`base_fields`; every field of a spec built in code)."""
        return self.base_fields is None or name in self.base_fields

    def _check_digital_fields(self, points: Sequence[Point]) -> None:
        """Raise :class:`SpecError` when every point is digital and the spec's own ``[base]`` sets, to other than
        its default, an analog setting that a digital run ignores (all but
        :data:`~imc_grapes.config.DIGITAL_ANALOG_FIELDS`: the device preset and its parameters, the periphery, the
        importance, ...) or ``inference_times`` (which only analog runs evaluate; an axis over it too), as the
        command line refuses them with ``--backend digital``. Settings that ``[sweep] base_from`` brought in (a
        digital baseline of an analog run) are accepted: the file did not write them (:meth:`_written`); so is
        a design with some analog point. The analog axes of an all-digital sweep are refused by :meth:`points`."""
        if not points or any(p.config.backend != "digital" for p in points):
            return
        analog, default = self.base.analog, AnalogSettings()
        fields = [(f"analog.{f.name}", getattr(analog, f.name), getattr(default, f.name))
                  for f in dataclasses.fields(AnalogSettings)
                  if f.name not in (*DIGITAL_ANALOG_FIELDS, "device_overrides") and self._written(f"analog.{f.name}")
                  and getattr(analog, f.name) != getattr(default, f.name)]
        if overrides := {k: v for k, v in analog.device_overrides.items() if self._written(f"device.{k}")}:
            from devices import get_preset

            device = get_preset(analog.preset)    # an override's default: the value of the base's preset
            fields += [(f"device.{k}", v, getattr(device, k)) for k, v in overrides.items()
                       if v != getattr(device, k)]
        axes, times = self._set_fields("train", ("inference_times",))
        fields += [(path, list(v), list(d)) for path, v, d in times]
        if axes or fields:
            kept = " and ".join(f"analog.{k}" for k in DIGITAL_ANALOG_FIELDS)
            raise _no_effect_error(axes, fields, "every point is digital (backend = 'digital'), and a digital run "
                                   f"reads no analog setting but {kept} and evaluates no inference_times",
                                   "give some points an analog backend (backend = 'crossbar' or 'aihwkit' in [base], "
                                   "or by an axis, e.g. backend = ['digital', 'crossbar']); an analog run's settings "
                                   "that [sweep] base_from brings in are accepted (a digital baseline of that run)")

    def _check_optimizer_fields(self, points: Sequence[Point]) -> None:
        """Raise :class:`SpecError` for the optimizer settings that no point reads, as the command line refuses
        them: a ``momentum`` (other than its default, or an axis) when every point's base optimizer takes none
        (:data:`~imc_grapes.backends.optim.MOMENTUM_BASE_OPTIMIZERS`), and an ``analog.importance`` /
        ``analog.importance_every`` when no point uses GRAPES. A design where some points read them (e.g. an axis
        base_optimizer = ["sgd", "adam"]) is accepted."""
        takes = MOMENTUM_BASE_OPTIMIZERS
        axes, fields = self._set_fields("train", ("momentum",))
        bases = sorted({p.config.base_optimizer for p in points})
        if (axes or fields) and not set(bases) & set(takes):
            raise _no_effect_error(axes, fields, f"every point's base_optimizer is {' or '.join(bases)}, which "
                                   f"take{'s' if len(bases) == 1 else ''} no momentum (only {' and '.join(takes)} "
                                   "do)", f"give some points base_optimizer = {' or '.join(map(repr, takes))} (in "
                                   f"[base], or by an axis, e.g. base_optimizer = [{takes[0]!r}, {bases[0]!r}])")
        axes, fields = self._set_fields("analog", ("importance", "importance_every"))
        optimizers = sorted({p.config.optimizer for p in points})
        if (axes or fields) and not set(optimizers) & set(GRAPES_OPTIMIZERS):
            first = GRAPES_OPTIMIZERS[0]
            raise _no_effect_error(axes, fields, f"no point uses GRAPES (every point's optimizer is "
                                   f"{' or '.join(optimizers)}): only {', '.join(GRAPES_OPTIMIZERS)} read the "
                                   f"importance", f"give some points a GRAPES optimizer (optimizer = {first!r} in "
                                   f"[base], or by an axis, e.g. optimizer = [{optimizers[0]!r}, {first!r}])")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "out": self.out, "reference": self.reference, "tail_evals": self.tail_evals,
            "base": self.base.to_dict(),
            "axes": {ax.name: ax.to_dict() for ax in self.axes},
            "sample": {"n": self.n_samples, "seed": self.sample_seed} if self.n_samples else None,
        }


def repeated_points(points: Sequence[Point]) -> list[Point]:
    """The analog points of ``points`` that repeat the run of an earlier one: with ``analog.ideal_periphery = true``
    (exact MVMs) ``analog.out_noise`` changes nothing, so ideal points that differ only in it give the same numbers.
    A full-factorial sweep over both fields is legitimate (its non-ideal points differ): they are listed here, for
    ``--dry-run``, ``--status`` and the printed summary to say (:func:`repeated_points_note`), and still run as
    points of their own (their ids and folders are kept). Reads only."""
    default_noise = AnalogSettings().out_noise
    seen: set[str] = set()
    repeated = []
    for p in points:
        if p.config.backend == "digital" or not p.config.analog.ideal_periphery:
            continue
        key = config_id(p.config.replace(analog=dataclasses.replace(p.config.analog, out_noise=default_noise)))
        if key in seen:
            repeated.append(p)
        seen.add(key)
    return repeated


def repeated_points_note(n: int, total: int) -> str:
    """The note of ``--dry-run``, ``--status`` and the sweep's printed summary about ``n`` of its ``total`` points
    that repeat the run of another point (:func:`repeated_points`): one wording wherever it is shown."""
    return (f"{n} of the {total} points repeat the run of another point (same numbers): they differ from it only in "
            f"analog.out_noise, and analog.ideal_periphery = true {IDEAL_PERIPHERY_WHY}")


def merged_values(points: Sequence[Point]) -> dict[str, list[list[Any]]]:
    """Per axis, the groups of its values that denote the same analog point as another of its values (from
    :attr:`Point.merged_params`): spellings of one device in a whole ``analog.device_overrides`` table axis, which
    :meth:`SweepSpec.points` merges into one point, run once, under the first value. Each group lists its values
    in the order they are met (the first is the one the point is listed under); an axis without such values is left
    out.
    Reads only; for ``--dry-run`` and the run's first lines to say (:func:`merged_values_note`)."""
    groups: dict[str, list[list[Any]]] = {}
    for p in points:
        for other in p.merged_params:
            for name, value in other.items():
                mine = p.params.get(name)
                if _value_key(value) == _value_key(mine):
                    continue
                axis = groups.setdefault(name, [])
                found = [g for g in axis if any(_value_key(v) in (_value_key(mine), _value_key(value)) for v in g)]
                group = [v for g in found for v in g] or [mine]
                for v in (mine, value):
                    if all(_value_key(v) != _value_key(w) for w in group):
                        group.append(v)
                axis[:] = [g for g in axis if g not in found] + [group]
    return groups


def _value_key(v: Any) -> str:
    """A swept value as :func:`merged_values` compares it (its canonical JSON)."""
    return json.dumps(_plain(v), sort_keys=True, default=str)


def merged_values_note(axis: str, groups: Sequence[Sequence[Any]]) -> str:
    """The note of ``--dry-run`` and of a sweep's first lines about the ``groups`` of values of ``axis`` that denote
    the same point (:func:`merged_values`): one wording wherever it is shown."""
    n = sum(len(g) for g in groups)
    spelled = "; ".join(" = ".join(_spec_value(v) for v in g) for g in groups)
    return (f"{n} values of axis {axis!r} denote the same point as another of its values ({spelled}: a device "
            "override at the preset's own value is the same device): each such point runs once, under its first "
            "value")


def repeated_draws_note(n: int, draws: int) -> str:
    """The note of ``--dry-run`` and of a sweep's first lines about ``n`` of its ``draws`` random draws that repeat an
    earlier draw (:meth:`SweepSpec.repeated_draws`): one wording wherever it is shown."""
    return (f"{n} of the {draws} draws ([sample] n) repeat an earlier draw's values (the sampled axes have few "
            "values: int_uniform, choice): each distinct draw is one point, run once")


# --------------------------------------------------------------------------------------------- parsing


def _is_range(v: Any) -> bool:
    return isinstance(v, Mapping) and len(v) == 1 and next(iter(v)) in RANGE_KINDS


def _holds_fields(name: str) -> bool:
    """Whether a table in ``[axes]`` at ``name`` may hold axes (``[axes.device]``, ``analog``, ``periphery``,
    ``analog.device_overrides``, or a name that resolves to no field, whose error the deeper path gives): not at a
    field of its own (``lr``, ``device.dw_min``), where a table can only be a range, e.g. a misspelt one."""
    if name in SECTIONS or name == "analog.device_overrides":
        return True
    try:
        resolve_path(name)
    except SpecError:
        return True
    return False


def _flatten_axes(d: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping) and not _is_range(v) and _holds_fields(name):
            if not v:
                raise SpecError(f"axis table {name!r} is empty")
            yield from _flatten_axes(v, name + ".")
        else:
            yield name, v


def parse_axes(table: Mapping[str, Any]) -> tuple[Axis, ...]:
    """``[axes]`` (nested or dotted keys) -> axes; every path is resolved (unknown fields rejected)."""
    axes = []
    for name, v in _flatten_axes(table):
        path = resolve_path(name)
        if _is_range(v):
            kind, args = next(iter(v.items()))
            if not isinstance(args, (list, tuple)):
                raise SpecError(f"axis {name!r}: {kind} needs a list, e.g. {{{kind} = [lo, hi]}}, got {args!r}")
            try:
                rng = Range(kind, tuple(args))
            except SpecError as exc:
                raise SpecError(f"axis {name!r}: {exc}") from None
            axes.append(Axis(path, range=rng))
        elif isinstance(v, (list, tuple)):
            axes.append(Axis(path, values=tuple(v)))
        elif isinstance(v, Mapping):
            raise SpecError(f"axis {name!r}: a range table has exactly one key of {', '.join(RANGE_KINDS)}, "
                            f"got {sorted(v)}{did_you_mean_each(sorted(set(v) - set(RANGE_KINDS)), RANGE_KINDS)}")
        else:
            raise SpecError(f"axis {name!r} must be a list of values (grid) or a range table "
                            f"{{{' | '.join(RANGE_KINDS)} = [...]}} (sampled), got {v!r}; fixed values go in [base]")
    return tuple(axes)


def _flatten_base(d: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    """``[base]`` -> (dotted path, value); ``analog``/``periphery``/``device`` tables become section paths."""
    for k, v in d.items():
        if k in ("analog", "periphery") and isinstance(v, Mapping):
            for kk, vv in v.items():
                if k == "analog" and kk == "device_overrides" and isinstance(vv, Mapping):
                    yield from ((f"device.{name}", x) for name, x in vv.items())
                else:
                    yield f"{k}.{kk}", vv
        elif k == "device" and isinstance(v, Mapping):  # a table: device parameters; a string: the torch device
            yield from ((f"device.{name}", x) for name, x in v.items())
        else:
            yield k, v


def parse_base(table: Mapping[str, Any], start: TrainConfig | None = None) -> TrainConfig:
    """``[base]`` -> a validated TrainConfig (starting from ``start``, default ``TrainConfig()``)."""
    cfg = (start or TrainConfig()).to_dict()
    for name, value in _flatten_base(table):
        cfg = set_path(cfg, resolve_path(name), value)
    return _build(cfg, "[base]")


def _object_once(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object's ``pairs`` as a dict (``json.loads``' ``object_pairs_hook``); raises :class:`SpecError` for a
    key given twice, which ``json`` would otherwise settle silently by keeping the last (TOML refuses it)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise SpecError(f"the key {key!r} is given twice in one object")
        out[key] = value
    return out


def _load_base_from(path: Path) -> dict[str, Any]:
    """A config dict from a train ``results.json`` (``config``), a compare one (``spec.base``), or a TOML/JSON
    file of TrainConfig fields (optionally under ``base``)."""
    if not os.path.exists(path):    # os.path: no OSError for a name too long to be a file (none can exist)
        raise SpecError(f"[sweep] base_from: {path} does not exist")
    kind = "TOML" if path.suffix == ".toml" else "JSON"
    try:
        text = path.read_text()
        data = tomllib.loads(text) if kind == "TOML" else json.loads(text, object_pairs_hook=_object_once)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError, SpecError) as exc:
        raise SpecError(f"[sweep] base_from: {path} is not valid {kind}: {exc}") from None
    except OSError as exc:
        raise SpecError(f"[sweep] base_from: cannot read {path}: {exc.strerror or exc}") from None
    if not isinstance(data, dict):
        raise SpecError(f"[sweep] base_from: {path} must hold a {kind} object of TrainConfig fields (or a "
                        f"results.json), got a {type(data).__name__}")
    for key in ("config", "base"):
        if isinstance(data.get(key), dict):
            return data[key]
    if isinstance(data.get("spec"), dict) and isinstance(data["spec"].get("base"), dict):
        return data["spec"]["base"]
    return data


def _check_keys(table: Mapping[str, Any], valid: Sequence[str], where: str) -> None:
    unknown = sorted(set(table) - set(valid))
    if unknown:
        raise SpecError(f"unknown key(s) {unknown} in {where}; valid: {', '.join(valid)}"
                        f"{did_you_mean_each(unknown, valid)}")


def parse_spec(data: Mapping[str, Any], name: str = "sweep", base_dir: str | os.PathLike[str] = ".") -> SweepSpec:
    """Build a :class:`SweepSpec` from the parsed TOML tables (``sweep``, ``base``, ``axes``, ``sample``).

    Args:
        data: the spec as nested dicts.
        name: default name (the file stem) when ``[sweep] name`` is absent.
        base_dir: folder that a relative ``base_from`` is relative to (the spec file's folder).
    """
    _check_keys(data, SPEC_TABLES, "the spec (top-level tables)")
    for t in SPEC_TABLES:
        if t in data and not isinstance(data[t], Mapping):
            raise SpecError(f"[{t}] must be a table, got {data[t]!r}")
    sweep = data.get("sweep", {})
    _check_keys(sweep, SWEEP_KEYS, "[sweep]")
    for key in ("name", "out", "base_from"):
        if key in sweep and (not isinstance(sweep[key], str) or not sweep[key]):
            raise SpecError(f"[sweep] {key} must be a non-empty string"
                            + (" (a path)" if key != "name" else "") + f", got {sweep[key]!r}")
    start = None
    if "base_from" in sweep:
        p = Path(sweep["base_from"])
        start = _build(_load_base_from(p if p.is_absolute() else Path(base_dir) / p), f"[sweep] base_from {p}")
    base = parse_base(data.get("base", {}), start)
    base_fields = tuple(name for name, _ in _flatten_base(data.get("base", {})))
    axes = parse_axes(data.get("axes", {}))
    sample = data.get("sample", {})
    _check_keys(sample, SAMPLE_KEYS, "[sample]")
    if "sample" in data and "n" not in sample:
        raise SpecError("[sample] needs n = <number of draws ≥ 1>")
    n = sample.get("n", 0)
    if "sample" in data and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
        raise SpecError(f"[sample] n must be an integer ≥ 1, got {n!r}")
    seed = sample.get("seed", 0)
    reference = sweep.get("reference", False)
    if not isinstance(reference, bool):
        raise SpecError(f"[sweep] reference must be true or false, got {reference!r}")
    return SweepSpec(base=base, axes=axes, name=str(sweep.get("name", name)), n_samples=n, sample_seed=seed,
                     reference=reference, out=sweep.get("out"), tail_evals=sweep.get("tail_evals", 1),
                     base_fields=base_fields)


def load_spec(path: str | os.PathLike[str]) -> SweepSpec:
    """Read and validate a TOML spec file (every point is validated by :meth:`SweepSpec.points`)."""
    path = Path(path)
    if not os.path.exists(path):    # os.path: no OSError for a name too long to be a file (none can exist)
        raise SpecError(f"sweep spec {path} does not exist (see examples/sweeps/ for ready-made specs)")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path} is not valid TOML: {exc}") from None
    except OSError as exc:      # a folder, or a file this user may not read
        raise SpecError(f"cannot read the sweep spec {path}: {exc.strerror or exc}") from None
    return parse_spec(data, name=path.stem, base_dir=path.parent)
