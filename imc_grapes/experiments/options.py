"""What a user chooses when running a named experiment (size, backends, device preset, optimizers, seeds, lr
grid, data sets), and the run budgets of each size.

Sizes:

* ``tiny``: the synthetic data set, tiny networks, one seed: an end-to-end check in seconds (tests, smoke runs);
* ``quick``: MNIST / Fashion-MNIST subsets, the experiments' full learning-rate grids (6 factor-2 steps; 7 for
  the LSTM and spiking networks), 5 seeds digital (3 analog): minutes per experiment on 2 CPU cores; the analog
  budgets are smaller (the analog engine is 10–30× slower);
* ``full``: the whole data sets, more epochs, 5 seeds (hours on a CPU; the paper used 200 epochs and 10 runs).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any

from devices.base import FLOAT32_RANGE, fits_float32, is_finite_number

from ..backends import AnalogSettings
from ..config import BACKENDS, OPTIMIZERS, SEED_RANGE, ConfigError, device_ok, is_int, seed_in_range
from ..data.registry import DATASET_NAMES
from ..suggest import did_you_mean, did_you_mean_each
from ..train import tail_evals_error

__all__ = ["DEFAULT_PRESET", "SIZES", "Budget", "ExperimentOptions", "budget_for"]

SIZES: tuple[str, ...] = ("tiny", "quick", "full")
#: the analog backends' device preset unless the user names another (the command line's ``--device-preset``)
DEFAULT_PRESET = "ReRamSB"


@dataclass(frozen=True)
class Budget:
    """How much one group trains: data subsets, epochs, evaluation points, seeds, validation holdout.

    ``train_subset`` / ``test_subset``: first N samples (None: all); ``val_holdout``: last N training samples
    used to tune the learning rate (the test set is never used to choose).
    """

    train_subset: int | None
    test_subset: int | None
    epochs: int
    evals_per_epoch: int
    seeds: tuple[int, ...]
    val_holdout: int
    batch_size: int = 64

    def __post_init__(self) -> None:
        for name in ("epochs", "evals_per_epoch", "batch_size"):
            v = getattr(self, name)
            if not (is_int(v) and v >= 1):
                raise ConfigError(f"Budget.{name} must be an integer >= 1, got {v!r}")
        for name in ("train_subset", "test_subset"):
            v = getattr(self, name)
            if not (v is None or (is_int(v) and v >= 1)):
                raise ConfigError(f"Budget.{name} must be an integer >= 1 (or None for all), got {v!r}")
        if not (is_int(self.val_holdout) and self.val_holdout >= 0):
            raise ConfigError(f"Budget.val_holdout must be an integer >= 0, got {self.val_holdout!r}")
        if not (isinstance(self.seeds, tuple) and self.seeds
                and all(is_int(s) and seed_in_range(s) for s in self.seeds)):
            raise ConfigError(f"Budget.seeds must be a non-empty tuple of integers in {SEED_RANGE}, got {self.seeds!r}")


#: size -> hardware kind ("digital" / "analog") -> default budget (experiments may shrink or extend it)
_BUDGETS: dict[str, dict[str, Budget]] = {
    "tiny": {"digital": Budget(256, 128, 1, 1, (0,), 128, 32), "analog": Budget(128, 64, 1, 1, (0,), 64, 32)},
    "quick": {"digital": Budget(20000, None, 2, 2, (0, 1, 2, 3, 4), 5000),
              "analog": Budget(6000, 2000, 2, 2, (0, 1, 2), 2000)},
    "full": {"digital": Budget(None, None, 20, 1, (0, 1, 2, 3, 4), 5000),
             "analog": Budget(None, None, 5, 1, (0, 1, 2, 3, 4), 5000)},
}


@dataclass(frozen=True)
class ExperimentOptions:
    """The user's choices for one experiment run (every field has a sensible default).

    Attributes:
        size: ``tiny``, ``quick`` or ``full`` (default, as the command line; see the module docstring).
        backends: one or more of ``digital``, ``crossbar``, ``aihwkit``; each gets its own groups (the analog
            ones with the smaller analog budget).
        preset: device preset of the analog backends (``devices.PRESETS``).
        device_overrides: fields of ``preset``'s device model replaced in the analog groups, with aihwkit's names
            (``{"dw_min": 0.008}``; ``AnalogSettings.device_overrides``, the command line's ``--device-param``);
            checked by the device model. Empty (default): ``analog``'s own overrides, if any. The analog groups
            of non-empty overrides get their own folders (:func:`~.definitions.group_key`); refused when only the
            digital backend runs (it would change nothing).
        optimizers: methods compared (``sgd``, ``grapes``, ``grapes-local``, ``layer-mean``).
        seeds: seeds of the final runs, distinct integers (None: the size's default).
        lr_grid: learning rates tuned per optimizer, for every group (None: each experiment's default grid).
        datasets: data sets (None: the experiment's default; ``tiny`` always uses ``synthetic``).
        epochs: epochs per run (per task for ``forgetting``) instead of the size's default.
        drop_last: drop each epoch's partial last batch (``TrainConfig.drop_last``; default True).
        tail_evals: a run's accuracy (reported, compared, and the lr-tuning score) is the mean of its last
            ``tail_evals`` evaluations (default 1: the final one; ``CompareSpec.tail_evals``). Not for
            ``forgetting``, whose evaluation rows are per task.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``. data_root: data cache folder.
        analog: further analog settings (tile size, ADC/DAC bits, importance source, ...); its ``preset`` is
            replaced by ``preset`` and its ``device_overrides`` by ``device_overrides`` where that is given (both
            given and different: an error).
    """

    size: str = "full"
    backends: tuple[str, ...] = ("digital",)
    preset: str = DEFAULT_PRESET
    device_overrides: dict[str, float | bool] = field(default_factory=dict)
    optimizers: tuple[str, ...] = ("sgd", "grapes", "layer-mean")
    seeds: tuple[int, ...] | None = None
    lr_grid: tuple[float, ...] | None = None
    datasets: tuple[str, ...] | None = None
    epochs: int | None = None
    drop_last: bool = True
    tail_evals: int = 1
    device: str = "cpu"
    data_root: str | None = None
    analog: AnalogSettings = field(default_factory=AnalogSettings)

    def __post_init__(self) -> None:
        for name in ("backends", "optimizers", "seeds", "lr_grid", "datasets"):
            v = getattr(self, name)
            if v is None and name not in ("backends", "optimizers"):
                continue
            if not isinstance(v, (list, tuple)):
                raise ConfigError(f"ExperimentOptions.{name} must be a list or tuple"
                                  f"{'' if name in ('backends', 'optimizers') else ' (or None for the default)'}, "
                                  f"got {v!r}")
            object.__setattr__(self, name, tuple(v))
        if not isinstance(self.size, str) or self.size not in SIZES:
            raise ConfigError(f"ExperimentOptions.size must be one of {', '.join(SIZES)}, got {self.size!r}"
                              f"{did_you_mean(self.size, SIZES)}")
        bad = [b for b in self.backends if b not in BACKENDS]
        if not self.backends or bad or len(set(self.backends)) != len(self.backends):
            raise ConfigError(f"ExperimentOptions.backends must be distinct entries of {', '.join(BACKENDS)}, "
                              f"got {list(self.backends)}{did_you_mean_each(bad, BACKENDS)}")
        bad = [o for o in self.optimizers if o not in OPTIMIZERS]
        if not self.optimizers or bad:
            raise ConfigError(f"ExperimentOptions.optimizers must be one or more of {', '.join(OPTIMIZERS)}, "
                              f"got {list(self.optimizers)}{did_you_mean_each(bad, OPTIMIZERS)}")
        if self.seeds is not None and (not self.seeds or len(set(self.seeds)) != len(self.seeds)
                                       or not all(is_int(s) and seed_in_range(s) for s in self.seeds)):
            raise ConfigError(f"ExperimentOptions.seeds must name at least one seed, distinct integers in {SEED_RANGE} "
                              f"(or be None for the default), got {list(self.seeds)}")
        if self.lr_grid is not None and (not self.lr_grid or any(
                not (is_finite_number(lr) and lr > 0 and fits_float32(lr)) for lr in self.lr_grid)):
            raise ConfigError(f"ExperimentOptions.lr_grid must be learning rates > 0, each {FLOAT32_RANGE}, "
                              f"got {list(self.lr_grid)}")
        if self.datasets is not None:
            bad = [d for d in self.datasets if d not in DATASET_NAMES]
            if not self.datasets or bad or len(set(self.datasets)) != len(self.datasets):
                raise ConfigError(f"ExperimentOptions.datasets must be one or more distinct entries of "
                                  f"{', '.join(DATASET_NAMES)}, got {list(self.datasets)}")
        if (msg := tail_evals_error(self.tail_evals, "ExperimentOptions.tail_evals")) is not None:
            raise ConfigError(msg)
        if self.epochs is not None and not (is_int(self.epochs) and self.epochs >= 1):
            raise ConfigError(f"ExperimentOptions.epochs must be an integer >= 1 (or None for the default), "
                              f"got {self.epochs!r}")
        if not isinstance(self.drop_last, bool):
            raise ConfigError(f"ExperimentOptions.drop_last must be true or false, got {self.drop_last!r}")
        if not device_ok(self.device):
            raise ConfigError(f"ExperimentOptions.device must be cpu, cuda, cuda:N or auto (N an integer ≥ 0), "
                              f"got {self.device!r}")
        if not (self.data_root is None or isinstance(self.data_root, (str, os.PathLike))):
            raise ConfigError(f"ExperimentOptions.data_root must be None or the path of a folder, "
                              f"got {self.data_root!r}")
        if self.data_root == "":
            raise ConfigError("ExperimentOptions.data_root must be None or the path of a folder (an empty path names "
                              "none: None for the default cache), got ''")
        if isinstance(self.analog, dict):
            try:
                object.__setattr__(self, "analog", AnalogSettings.from_dict(self.analog))
            except ValueError as exc:
                raise ConfigError(f"ExperimentOptions.analog: {exc}") from exc
        if not isinstance(self.analog, AnalogSettings):
            raise ConfigError(f"ExperimentOptions.analog must be an AnalogSettings (or a dict of its fields), "
                              f"got {self.analog!r}")
        if not (isinstance(self.device_overrides, dict) and all(isinstance(k, str) for k in self.device_overrides)):
            raise ConfigError(f"ExperimentOptions.device_overrides must be a dict of device fields and values, "
                              f"got {self.device_overrides!r}")
        own = dict(self.analog.device_overrides)
        if self.device_overrides and own and own != self.device_overrides:
            raise ConfigError(f"ExperimentOptions.device_overrides {self.device_overrides!r} and "
                              f"analog.device_overrides {own!r} differ: give the device's overrides once")
        overrides = dict(self.device_overrides or own)
        try:
            analog = replace(self.analog, preset=self.preset, device_overrides={})
        except ValueError as exc:
            raise ConfigError(f"ExperimentOptions.preset: {exc}") from exc
        try:
            analog = replace(analog, device_overrides=overrides)
        except ValueError as exc:
            raise ConfigError(f"ExperimentOptions.device_overrides: {exc}") from exc
        object.__setattr__(self, "analog", analog)
        object.__setattr__(self, "device_overrides", overrides)
        if self.preset != DEFAULT_PRESET and self.backends == ("digital",):
            raise ConfigError(f"ExperimentOptions.preset {self.preset!r}: only the analog backends (crossbar, aihwkit) "
                              f"use a device preset, but backends is digital only; it would change nothing: leave it "
                              f"at {DEFAULT_PRESET} or add an analog backend (--backend digital crossbar)")
        if overrides and self.backends == ("digital",):
            raise ConfigError(f"ExperimentOptions.device_overrides {overrides!r} (--device-param): only the analog "
                              f"backends (crossbar, aihwkit) use the device model, but backends is digital only; it "
                              f"would change nothing: drop it or add an analog backend (--backend digital crossbar)")

    def datasets_or(self, default: tuple[str, ...]) -> tuple[str, ...]:
        """The data sets to run: ``synthetic`` for ``tiny``, else the user's choice or ``default``."""
        if self.datasets is not None:
            return self.datasets
        return ("synthetic",) if self.size == "tiny" else default

    def to_dict(self) -> dict[str, Any]:
        d = {k: (list(v) if isinstance(v, tuple) else dict(v) if isinstance(v, dict) else v)
             for k, v in self.__dict__.items() if k != "analog"}
        d["analog"] = self.analog.to_dict()
        return d


def budget_for(options: ExperimentOptions, hardware: str, **overrides: Any) -> Budget:
    """The budget of a group on ``hardware`` (``digital`` or ``analog``): the size's default with the
    experiment's ``overrides`` (for ``quick``/``full`` only), then the user's seeds and epochs."""
    b = _BUDGETS[options.size][hardware]
    if overrides and options.size != "tiny":
        b = replace(b, **overrides)
    if options.seeds is not None:
        b = replace(b, seeds=options.seeds)
    if options.epochs is not None:
        b = replace(b, epochs=options.epochs)
    return b
