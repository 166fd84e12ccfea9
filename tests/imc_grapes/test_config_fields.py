"""Every field of the run, analog, experiment, compare and sweep configs rejects invalid values (NaN, a bool or text for
a number, a float for an integer, an unknown choice, a number beyond float32's range, a malformed list) with a message
naming the field as the user writes it (walked by tests/field_walk.py: a new field without validation fails here), and
the cases the walk found that raised from deep inside Python or torch, or ran."""

from __future__ import annotations

import argparse
import re

import pytest
import torch

from imc_grapes.backends.settings import AnalogSettings
from imc_grapes.compare import CompareSpec
from imc_grapes.config import ConfigError, TrainConfig
from imc_grapes.experiments.options import Budget, ExperimentOptions
from imc_grapes.grapes import modulation
from imc_grapes.runtime import MAX_THREADS, set_torch_threads
from imc_grapes.sweep.cli import _executor
from imc_grapes.sweep.spec import Range, SweepSpec

from ..field_walk import walk_errors

COMPARE_FIELDS = ("base", "optimizers", "hardware", "analog_backend", "lr_grid", "tune_seeds", "tune_score",
                  "tail_evals", "val_holdout", "seeds", "target_acc")


def _budget(**kw: object) -> Budget:
    return Budget(**{"train_subset": 10, "test_subset": 10, "epochs": 1, "evals_per_epoch": 1, "seeds": (0,),
                     "val_holdout": 0, **kw})


WALKS = {
    "TrainConfig": lambda: walk_errors(TrainConfig),
    "AnalogSettings": lambda: walk_errors(AnalogSettings),
    "ExperimentOptions": lambda: walk_errors(
        ExperimentOptions, lambda **kw: ExperimentOptions(**{"backends": ("digital", "crossbar"), **kw})),
    "Budget": lambda: walk_errors(Budget, _budget),
    # CompareSpec's messages name the bare field, as the compare command's options do
    "CompareSpec": lambda: walk_errors(CompareSpec,
                                       lambda **kw: CompareSpec(**{"base": TrainConfig(dataset="synthetic"), **kw}),
                                       names={f: f for f in COMPARE_FIELDS}),
    # the spec file's tables and keys: [sample] n, [sweep] reference, ...; a sweep's name is any text without '/'
    # (but '.' and '..')
    "SweepSpec": lambda: walk_errors(SweepSpec, free_text=("name",),
                                     names={"n_samples": "[sample] n", "sample_seed": "[sample] seed",
                                            "reference": "[sweep] reference", "out": "[sweep] out",
                                            "name": "[sweep] name", "tail_evals": "tail_evals"}),
    # an axis' range is written {uniform = [lo, hi]}: its arguments are named by its kind
    "Range": lambda: walk_errors(Range, lambda **kw: Range(**{"kind": "uniform", "args": (0.0, 1.0), **kw}),
                                 names={"args": "Range uniform"}),
}


@pytest.mark.parametrize("name", WALKS)
def test_every_field_rejects_invalid_values_naming_it(name: str) -> None:
    assert WALKS[name]() == []


@pytest.mark.parametrize("field", ["lr", "momentum", "weight_decay"])
def test_train_numbers_beyond_float32_rejected(field: str) -> None:
    with pytest.raises(ConfigError, match=rf"^TrainConfig\.{field} must be [^,]+, at most 3\.4e\+38 in magnitude .*, "
                                          rf"got 1e\+300$"):
        TrainConfig(**{field: 1e300})


def test_an_lr_that_is_zero_in_float32_is_rejected() -> None:
    """``--lr 1e-320`` was accepted (> 0 as a Python float) and trained nothing: float32 rounds it to 0."""
    assert float(torch.tensor(1e-320, dtype=torch.float32)) == 0.0
    with pytest.raises(ConfigError, match=r"^TrainConfig\.lr must be at least 1\.401e-45 \(the smallest positive "
                                          r"float32: .*\), got 1e-320$"):
        TrainConfig(lr=1e-320)
    smallest = TrainConfig(lr=2.0 ** -149).lr                       # the smallest positive float32 itself is valid
    assert float(torch.tensor(smallest, dtype=torch.float32)) > 0.0


def test_inference_times_beyond_float32_rejected() -> None:
    """``--inference-times 1e300`` ran: the time became inf in the weights' float32 and the drift read zeros."""
    with pytest.raises(ConfigError,
                       match=r"^TrainConfig\.inference_times must be ≥ 0 seconds, each at most 3\.4e\+38 "):
        TrainConfig(inference_times=(1.0, 1e300))
    assert TrainConfig(inference_times=(3.4e38,)).inference_times == (3.4e38,)


def test_train_model_of_wrong_type_names_the_field() -> None:
    """A list raised ``TypeError: unhashable type: 'list'`` when the default widths were looked up."""
    with pytest.raises(ConfigError, match=r"^TrainConfig\.model must be one of mlp, cnn, got \['mlp'\]"):
        TrainConfig(model=["mlp"])  # type: ignore[arg-type]


@pytest.mark.parametrize("field", ["out_noise", "importance_g_offset"])
def test_analog_numbers_beyond_float32_rejected(field: str) -> None:
    with pytest.raises(ValueError, match=rf"^AnalogSettings\.{field} must be a finite number >= 0, at most 3\.4e\+38 "):
        AnalogSettings(**{field: 1e300})



@pytest.mark.parametrize("changes, field", [
    ({"out_noise": 1e38}, r"out_noise = 1e\+38"),
    ({"tile_size": 10 ** 30}, r"tile_size = 1000000000000000000000000000000"),
    ({"out_noise": 3.8e37, "preset": "PCM"}, r"out_noise = 3\.8e\+37"),
])
def test_analog_settings_whose_crossbar_config_the_engine_refuses_are_refused_when_made(changes, field) -> None:
    """``out_noise`` 1e38 passed AnalogSettings (a finite float32) and failed with a traceback when a run built its
    network (the crossbar engine refuses MVMs that can overflow float32: out_noise at most 3.779e37 on tiles of 256
    lines, crossbar/test_noise_limits.py derives it): refused when the settings are made, naming the setting and
    the engine's limit; realistic values pass, and a unidirectional preset's warning is not raised by the check."""
    with pytest.raises(ValueError, match=rf"^AnalogSettings\.{field}: the crossbar engine refuses the config these "
                                         rf"settings make \(tile_size .*\): CrossbarConfig\.\S+ must be at most "):
        AnalogSettings(**changes)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        AnalogSettings(out_noise=3.7e37)            # below the limit of the default device on 256 lines
        AnalogSettings(preset="PCM", out_noise=1.0, tile_size=4096)


def test_the_crossbar_check_of_analog_settings_sees_the_device_with_its_overrides() -> None:
    """The check of the crossbar config runs on the device the settings make, overrides applied (the one device
    that the settings' validation builds): bounds of ±1e36 on exact MVMs (no ADC bound) can overflow float32 on 256
    lines (a sampled bound, spread device to device, beyond 3.4e38 / 256 = 1.33e36) and are refused naming
    ``device_overrides`` and those bounds; the preset's own (±1.25) and ±1e34 (100 times less) pass."""
    big = {"w_max": 1e36, "w_min": -1e36}
    with pytest.raises(ValueError, match=r"^AnalogSettings\.device_overrides = \{'w_max': 1e\+36, 'w_min': -1e\+36\}: "
                                         r"the crossbar engine refuses the config these settings make .*"
                                         r"w_min = -1e\+36, w_max = 1e\+36"):
        AnalogSettings(ideal_periphery=True, device_overrides=big)
    assert AnalogSettings(ideal_periphery=True, device_overrides={"w_max": 1e34, "w_min": -1e34}).device().w_max == 1e34
    assert AnalogSettings(ideal_periphery=True).device().w_max == 1.25


@pytest.mark.parametrize("field,value,message", [
    ("drop_last", "no", r"ExperimentOptions\.drop_last must be true or false, got 'no'"),
    ("device", "gpu", r"ExperimentOptions\.device must be cpu, cuda, cuda:N or auto .*, got 'gpu'"),
    ("data_root", 3, r"ExperimentOptions\.data_root must be None or the path of a folder, got 3"),
    ("data_root", "", r"ExperimentOptions\.data_root must be None or the path of a folder \(an empty path names "
                      r"none: None for the default cache\), got ''"),
    ("analog", 3, r"ExperimentOptions\.analog must be an AnalogSettings \(or a dict of its fields\), got 3"),
    ("analog", {"tile_size": 0}, r"ExperimentOptions\.analog: AnalogSettings\.tile_size must be an integer ≥ 1"),
    ("seeds", 3, r"ExperimentOptions\.seeds must be a list or tuple \(or None for the default\), got 3"),
    ("backends", "digital", r"ExperimentOptions\.backends must be a list or tuple, got 'digital'"),
    ("preset", "ReRam", r"ExperimentOptions\.preset: AnalogSettings\.preset must be one of"),
    ("lr_grid", (0.1, 1e300), r"ExperimentOptions\.lr_grid must be learning rates > 0, each at most 3\.4e\+38"),
])
def test_experiment_options_found_by_the_walk(field: str, value: object, message: str) -> None:
    """Before: ``drop_last``, ``device``, ``data_root`` took anything (``"no"`` ran as dropping), a non-list raised
    ``'int' object is not iterable``, a non-AnalogSettings ``analog`` an AttributeError, a string backends was split
    into letters; the preset's message did not say which option."""
    with pytest.raises(ConfigError, match=f"^{message}"):
        ExperimentOptions(**{"backends": ("digital", "crossbar"), field: value})


def test_budget_names_the_field() -> None:
    """Before: one message for all fields ('Budget: epochs, evals_per_epoch, batch_size must be >= 1 ...'), and NaN,
    2.5 or True epochs, any seeds and any val_holdout were accepted."""
    with pytest.raises(ConfigError, match=r"^Budget\.epochs must be an integer >= 1, got 2\.5$"):
        _budget(epochs=2.5)
    with pytest.raises(ConfigError, match=r"^Budget\.val_holdout must be an integer >= 0, got -1$"):
        _budget(val_holdout=-1)
    with pytest.raises(ConfigError, match=r"^Budget\.seeds must be a non-empty tuple of integers in "):
        _budget(seeds=())


def test_compare_lr_grid_beyond_float32_names_the_grid() -> None:
    with pytest.raises(ConfigError, match=r"^lr_grid must be one or more learning rates > 0, each at most 3\.4e\+38"):
        CompareSpec(base=TrainConfig(dataset="synthetic"), lr_grid=(1e300,))


@pytest.mark.parametrize("kwargs,message", [
    ({"base": {"lr": 0.1}}, r"^SweepSpec\.base must be a TrainConfig, got \{'lr': 0\.1\}$"),
    ({"axes": 3}, r"^SweepSpec\.axes must be a list of Axis .*, got 3$"),
    ({"name": 3}, r"^\[sweep\] name must be a non-empty name without '/', not '\.' or '\.\.' \(.*\), got 3$"),
    ({"reference": "yes"}, r"^\[sweep\] reference must be true or false, got 'yes'$"),
    ({"out": 3}, r"^\[sweep\] out must be a non-empty string \(a path\), got 3$"),
])
def test_sweep_spec_found_by_the_walk(kwargs: dict, message: str) -> None:
    """Before: a dict base and a non-bool reference were accepted (failing only when the points were listed), a
    number name raised ``argument of type 'int' is not iterable``, a number axes ``'int' object is not iterable``."""
    with pytest.raises(ConfigError, match=message):
        SweepSpec(**kwargs)


def test_range_args_of_wrong_type_names_the_kind() -> None:
    with pytest.raises(ConfigError, match=r"^Range uniform must be a list \(\[lo, hi\]\), got 3$"):
        Range("uniform", 3)  # type: ignore[arg-type]


@pytest.mark.parametrize("clip", [(1.0,), ("1", "2"), (float("nan"), 2.0), (2.0, 1.0), (True, 2.0)],
                         ids=repr)
def test_modulation_clip_validated(clip: object) -> None:
    """``(1.0,)`` raised IndexError and ``("1", "2")`` ran as numbers."""
    with pytest.raises(ValueError, match=rf"^modulation\.clip must be None or a pair \(low, high\) of numbers with "
                                         rf"low <= high, got {re.escape(repr(clip))}$"):
        modulation(torch.ones(3), clip)  # type: ignore[arg-type]


def test_threads_beyond_torchs_int_rejected_naming_the_option() -> None:
    """``--threads 10**30`` raised torch's 'Overflow when unpacking long long' (train, compare, experiment) or reached
    the sweep's workers."""
    assert MAX_THREADS == 2**31 - 1
    with pytest.raises(ValueError, match=r"^--threads must be at most 2\^31 - 1 \(what torch\.set_num_threads takes\), "
                                         r"got 1000000000000000000000000000000$"):
        set_torch_threads(10**30)
    args = argparse.Namespace(jobs=None, threads=2**31, replicas=1, executor="local", address=None)
    with pytest.raises(ValueError, match=r"^--threads must be at most 2\^31 - 1 "):
        _executor(args)


def test_threads_beyond_four_per_usable_core_rejected_naming_the_limit(monkeypatch):
    """``--threads 100000`` passed the check (only torch's C int bound) and hung the run: torch spawned the threads
    and one 512×512 matmul on 2 cores did not finish in 100 s. Four per usable core is the limit on this machine;
    a Ray cluster's workers (``--address``) are other machines, which the check here does not know."""
    from imc_grapes import runtime

    monkeypatch.setattr(runtime, "available_cpus", lambda: 2)
    message = (r"^--threads must be at most 8 \(4 per CPU core this process may use, 2 here\): more threads only "
               r"oversubscribe the cores, and thousands stall torch; got 9$")
    with pytest.raises(ValueError, match=message):
        set_torch_threads(9)
    before = torch.get_num_threads()
    try:
        set_torch_threads(8)
        assert torch.get_num_threads() == 8
    finally:
        torch.set_num_threads(before)
    local = argparse.Namespace(jobs=None, threads=9, replicas=1, executor="local", address=None)
    with pytest.raises(ValueError, match=message):
        _executor(local)
    runtime.check_threads(9, local=False)     # a cluster's workers: only torch's bound applies
