""""Did you mean ...?" below imc_grapes: devices/ and crossbar/ share imc_grapes's helper (one implementation, in
devices/suggest.py) without importing imc_grapes, and their name and mode errors append it."""
import subprocess
import sys

import pytest
import torch

import devices as dv
from crossbar import _sparse_update as su
from devices import fusion
from devices import suggest


def test_one_implementation_reexported_by_imc_grapes():
    from imc_grapes import suggest as top

    assert top.did_you_mean is suggest.did_you_mean
    assert top.did_you_mean_each is suggest.did_you_mean_each
    assert top.close_match is suggest.close_match


def test_devices_and_crossbar_do_not_import_imc_grapes():
    code = ("import sys, devices, crossbar, devices.suggest\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'imc_grapes')\n"
            "assert not bad, bad")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr


@pytest.mark.parametrize("typed, meant", [("Capaciter", "Capacitor"), ("idealised", "Idealized"),
                                          ("ecrm", "EcRam")])
def test_get_preset_suggests_the_close_name(typed, meant):
    with pytest.raises(ValueError) as err:
        dv.get_preset(typed)
    msg = str(err.value)
    assert msg.startswith(f"unknown device preset {typed!r}; valid names: {', '.join(dv.PRESETS)}")
    assert msg.endswith(f"; did you mean {meant!r}?")


def test_get_preset_without_a_close_name_has_no_guess():
    with pytest.raises(ValueError) as err:
        dv.get_preset("NoSuchDevice")
    assert str(err.value) == f"unknown device preset 'NoSuchDevice'; valid names: {', '.join(dv.PRESETS)}"


def test_compile_mode_suggests_the_close_mode(monkeypatch):
    with pytest.raises(ValueError, match=r"^set_compile\(mode\) must be one of auto, on, off, got 'of'; did you mean "
                                         r"'off'\?$"):
        fusion.set_compile("of")
    monkeypatch.setenv(fusion.COMPILE_ENV, " Atuo ")    # read as the import reads it: stripped, lower case
    assert fusion._mode_from_env() == (None, "IMC_GRAPES_COMPILE must be one of auto, on, off, got 'atuo'; did you "
                                             "mean 'auto'?")
    monkeypatch.setenv(fusion.COMPILE_ENV, "yes")       # nothing close: the list alone
    assert fusion._mode_from_env() == (None, "IMC_GRAPES_COMPILE must be one of auto, on, off, got 'yes'")


def test_int8_counts_setting_suggests_the_close_mode():
    with pytest.raises(ValueError) as err:
        su.int8_counts_mode(" Of ", frozenset(), True)
    assert str(err.value) == "IMC_GRAPES_INT8_COUNTS must be one of auto, on, off, got ' Of '; did you mean 'off'?"
    with pytest.raises(ValueError) as err:
        su.int8_counts_mode("fast", frozenset(), True)
    assert str(err.value) == "IMC_GRAPES_INT8_COUNTS must be one of auto, on, off, got 'fast'"


@pytest.mark.parametrize("field, typed, meant, valid", [
    ("noise_management", "absmax", "abs_max", "('abs_max', 'none', 'constant')"),
    ("bound_management", "iterativ", "iterative", "('iterative', 'none')"),
    ("w_noise_type", "additive", "additive_constant", "('none', 'additive_constant')"),
])
def test_periphery_modes_suggest_the_close_mode(field, typed, meant, valid):
    from crossbar import IOParameters

    with pytest.raises(ValueError) as err:
        IOParameters(**{field: typed})
    assert str(err.value) == f"IOParameters.{field} must be one of {valid}, got {typed!r}; did you mean {meant!r}?"
    with pytest.raises(ValueError) as err:             # nothing close: the list alone
        IOParameters(**{field: "zzz"})
    assert str(err.value) == f"IOParameters.{field} must be one of {valid}, got 'zzz'"


def test_pulse_type_suggests_the_close_type():
    from crossbar.update import UpdateParameters

    valid = "('stochastic_compressed', 'stochastic', 'none')"
    with pytest.raises(ValueError) as err:
        UpdateParameters(pulse_type="stochastik")
    assert str(err.value) == (f"UpdateParameters.pulse_type must be one of {valid}, got 'stochastik'; did you mean "
                              "'stochastic'?")
    with pytest.raises(ValueError) as err:
        UpdateParameters(pulse_type="deterministic")
    assert str(err.value) == f"UpdateParameters.pulse_type must be one of {valid}, got 'deterministic'"


def test_device_state_dict_key_suggests_the_close_key():
    sd = dv.LinearStepDevice().sample((2,), torch.Generator().manual_seed(0)).state_dict()
    with pytest.raises(ValueError, match=r"unknown key 'dw_upp'; .*; did you mean 'dw_up'\?$"):
        dv.DeviceParams.from_state_dict({**sd, "dw_upp": sd["dw_up"]})
    with pytest.raises(ValueError, match=r"unknown key 'bogus'; valid: .* or 'extra.<name>'$"):
        dv.DeviceParams.from_state_dict({**sd, "bogus": sd["dw_up"]})
