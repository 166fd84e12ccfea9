"""Sweep specs: dotted paths, validation before anything runs, grid/sample expansion, the example specs."""
from __future__ import annotations

import dataclasses
import math
import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices import PRESETS, get_preset
from imc_grapes.backends.settings import AnalogSettings
from imc_grapes.config import TrainConfig
from imc_grapes.sweep import PERIPHERY_FIELDS, SpecError, SweepSpec, load_spec, parse_spec, resolve_path, run_sweep
from imc_grapes.sweep.spec import config_id

REPO = Path(__file__).resolve().parents[2]
TINY = {"dataset": "synthetic", "hidden": [8], "train_subset": 100, "test_subset": 50, "batch_size": 50}


def spec_of(axes: dict, base: dict | None = None, **sweep) -> SweepSpec:
    return parse_spec({"sweep": sweep, "base": {**TINY, **(base or {})}, "axes": axes})


def message(exc_info: pytest.ExceptionInfo) -> str:
    return str(exc_info.value)


# ------------------------------------------------------------------------------------------ unknown fields


def test_unknown_top_level_field_lists_every_train_config_field():
    with pytest.raises(SpecError) as e:
        spec_of({"lrate": [0.1]})
    msg = message(e)
    assert "'lrate'" in msg
    for f in dataclasses.fields(TrainConfig):
        assert f.name in msg


def test_unknown_analog_field_lists_analog_settings_fields():
    with pytest.raises(SpecError) as e:
        spec_of({"analog": {"adc_bit": [4]}})
    msg = message(e)
    assert "analog.adc_bit" in msg
    for f in dataclasses.fields(AnalogSettings):
        assert f.name in msg


def test_unknown_periphery_field_lists_the_periphery_fields():
    with pytest.raises(SpecError) as e:
        spec_of({"periphery.preset": ["ReRamSB"]})  # preset is an analog field, not a periphery one
    msg = message(e)
    assert set(PERIPHERY_FIELDS) == {"dac_bits", "adc_bits", "out_noise", "ideal_periphery", "tile_size"}
    for name in PERIPHERY_FIELDS:
        assert name in msg


def test_unknown_device_field_lists_device_fields():
    with pytest.raises(SpecError) as e:
        spec_of({"device": {"dw_mn": [0.01]}}, base={"backend": "crossbar"})
    msg = message(e)
    assert "device.dw_mn" in msg
    for f in dataclasses.fields(get_preset("ReRamSB")):
        assert f.name in msg


def test_unknown_section_and_subfield_of_plain_field_are_rejected():
    with pytest.raises(SpecError, match="unknown section 'tile'"):
        spec_of({"tile.rows": [4]})
    with pytest.raises(SpecError, match="has no sub-fields"):
        spec_of({"optimizer.name": ["sgd"]})
    with pytest.raises(SpecError, match=r"unknown key\(s\) \['axis'\]"):
        parse_spec({"axis": {"lr": [0.1]}})
    with pytest.raises(SpecError, match=r"unknown key\(s\) \['workers'\] in \[sweep\]"):
        parse_spec({"sweep": {"workers": 2}, "axes": {"lr": [0.1]}})


def test_device_field_of_another_preset_is_rejected_per_point_by_the_preset():
    # a field that exists in some preset but not in the point's one: AnalogSettings names the preset's fields
    union = set().union(*({f.name for f in dataclasses.fields(get_preset(n))} for n in PRESETS))
    own = {f.name for f in dataclasses.fields(get_preset("ReRamSB"))}
    extra = sorted(union - own)
    assert extra, "the presets' device models have different fields (e.g. ExpStep's A_up): the case exists"
    spec = spec_of({f"device.{extra[0]}": [1.0]}, base={"backend": "crossbar"})
    with pytest.raises(SpecError, match="for preset 'ReRamSB'"):
        spec.points()


# ------------------------------------------------------------------------------------------ bad values


def _own_message(fn) -> str:
    with pytest.raises(ValueError) as e:
        fn()
    return str(e.value)


def test_bad_values_are_rejected_with_the_config_classes_own_message():
    own = _own_message(lambda: AnalogSettings(adc_bits=30))
    with pytest.raises(SpecError) as e:
        spec_of({"periphery.adc_bits": [4, 30]}, base={"backend": "crossbar"}).points()
    assert own in message(e) and "periphery.adc_bits=30" in message(e)

    own = _own_message(lambda: TrainConfig(lr=-1.0))
    with pytest.raises(SpecError) as e:
        spec_of({"lr": [0.1, -1.0]}).points()
    assert own in message(e)

    own = _own_message(lambda: get_preset("ReRamSB", dw_min=-0.1))
    with pytest.raises(SpecError) as e:
        spec_of({"device.dw_min": [-0.1]}, base={"backend": "crossbar"}).points()
    assert own in message(e)

    with pytest.raises(SpecError, match=r"\[base\]: .*optimizer must be one of"):
        spec_of({"lr": [0.1]}, base={"optimizer": "adamw-grapes"})


def test_every_invalid_point_is_reported_and_nothing_runs(tmp_path):
    spec = spec_of({"lr": [0.1, -1.0, -2.0], "seed": [0, 1]})
    with pytest.raises(SpecError) as e:
        run_sweep(spec, tmp_path / "out", log=lambda _m: None)
    assert message(e).startswith("4 of 6 point(s) are invalid")
    assert not (tmp_path / "out").exists()  # validated before anything was created or run


def test_malformed_axes_are_rejected():
    with pytest.raises(SpecError, match="must be a list of values"):
        spec_of({"lr": 0.1})
    with pytest.raises(SpecError, match="has no values"):
        spec_of({"lr": []})
    with pytest.raises(SpecError, match="add a \\[sample\\] table"):
        spec_of({"lr": {"log_uniform": [0.01, 0.1]}})
    with pytest.raises(SpecError, match="no axis is a range"):
        parse_spec({"axes": {"lr": [0.1]}, "sample": {"n": 3}})
    with pytest.raises(SpecError, match="log_uniform needs 0 < lo"):
        parse_spec({"axes": {"lr": {"log_uniform": [0.0, 0.1]}}, "sample": {"n": 3}})
    with pytest.raises(SpecError, match="set the same field"):
        spec_of({"device.dw_min": [0.1], "analog": {"device_overrides": {"dw_min": [0.2]}}})
    with pytest.raises(SpecError, match="every point is digital"):
        spec_of({"device.dw_min": [0.001, 0.01]}).points()  # base backend digital: the axis would do nothing


@pytest.mark.parametrize("table", ["base", "axes"])
@pytest.mark.parametrize("typed, meant", [("lrate", "lr"), ("learning_rate", "lr"), ("learning-rate", "lr"),
                                          ("n_epochs", "epochs"), ("bs", "batch_size"), ("random_seed", "seed")])
def test_another_name_of_a_short_field_is_pointed_to_the_field(tmp_path, table, typed, meant):
    """`lrate = 0.1` in a spec got no "did you mean": too far from 'lr' for difflib (likewise learning_rate, bs,
    random_seed). The common other names of the short training fields now name the field, in [base] and as an axis
    (the rest of the message, the valid fields, as before)."""
    entry = f"[axes]\n{typed} = [0.1, 0.2]" if table == "axes" else f"{typed} = 0.1"
    (tmp_path / "s.toml").write_text(f'[base]\ndataset = "synthetic"\n{entry}\n')
    with pytest.raises(SpecError) as e:
        load_spec(tmp_path / "s.toml")
    assert message(e).startswith(f"unknown field {typed!r} (top level = TrainConfig fields); valid: ")
    assert message(e).endswith(f"; did you mean {meant!r}?")


@pytest.mark.parametrize("line, axis, got, hint", [
    ("lr = { unifrom = [0.01, 0.1] }", "lr", "['unifrom']", "; did you mean 'uniform'?"),
    ("device.dw_min = { log_unifrom = [0.001, 0.1] }", "device.dw_min", "['log_unifrom']",
     "; did you mean 'log_uniform'?"),
    ("periphery.adc_bits = { int_uniform = [4, 8], choice = [4, 8] }", "periphery.adc_bits",
     "['choice', 'int_uniform']", ""),
    ("lr = {}", "lr", "[]", ""),
])
def test_a_misspelt_range_table_is_named_as_a_range_not_as_a_sub_field(line, axis, got, hint):
    """A table at a field's own path can only be a range: a misspelt kind (or two kinds) is named as such, with the
    kind meant, not read as a section whose sub-field 'lr.unifrom' does not exist ('lr' has no sub-fields)."""
    with pytest.raises(SpecError) as e:
        parse_spec(tomllib.loads(f"[axes]\n{line}\n[sample]\nn = 2\n"))
    assert message(e) == (f"axis {axis!r}: a range table has exactly one key of uniform, log_uniform, int_uniform, "
                          f"choice, got {got}{hint}")


def test_tables_of_axes_at_a_section_path_still_hold_axes():
    spec = parse_spec(tomllib.loads('[base]\nbackend = "crossbar"\n[axes.device]\ndw_min = [0.01, 0.1]\n'
                                    '[axes.analog.device_overrides]\nup_down = [0.0, 0.1]\n'
                                    '[axes.periphery]\nadc_bits = { int_uniform = [4, 8] }\n[sample]\nn = 2\n'))
    assert [(ax.name, ax.path.section, ax.path.field) for ax in spec.axes] == [
        ("device.dw_min", "device", "dw_min"), ("analog.device_overrides.up_down", "device", "up_down"),
        ("periphery.adc_bits", "analog", "adc_bits")]


# ------------------------------------------------------------------------------------------ expansion


@pytest.mark.parametrize("axes", [
    {"device": {"dw_min": [0.01, 0.1]}, "analog": {"device_overrides": [{"up_down": 0.1}]}},
    {"analog": {"device_overrides": [{"up_down": 0.1}]}, "device": {"dw_min": [0.01, 0.1]}},
])
def test_a_device_overrides_table_axis_and_a_device_axis_are_rejected(axes):
    """An ``analog.device_overrides`` axis sets the whole table a ``device.*`` axis writes one entry of: together the
    table dropped the entry (two dw_min points became one, labelled with a dw_min it did not run)."""
    with pytest.raises(SpecError, match=r"set the same field"):
        spec_of(axes, base={"backend": "crossbar"})


def test_paths_resolve_to_their_sections():
    assert resolve_path("lr").section == "train"
    adc = resolve_path("periphery.adc_bits")
    assert (adc.section, adc.field) == ("analog", "adc_bits")
    assert resolve_path("analog.preset").field == "preset"
    assert resolve_path("analog.device_overrides.up_down") .section == "device"
    assert resolve_path("device.up_down").is_hardware and not resolve_path("seed").is_hardware


def test_toml_grid_sets_each_field_where_it_belongs(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text("""
[sweep]
out = "somewhere"
[base]
dataset = "synthetic"
hidden = [8]
backend = "crossbar"
[base.analog]
preset = "Idealized"
[base.device]
dw_min_dtod = 0.0
[axes]
device.dw_min = [0.001, 0.01]
"periphery.adc_bits" = [4, 8]
optimizer = ["sgd", "grapes"]
""")
    spec = load_spec(path)
    assert spec.name == "s" and spec.out_dir == Path("somewhere")
    points = spec.points()
    assert len(points) == 8
    expected = [(dw, bits, opt) for dw in (0.001, 0.01) for bits in (4, 8) for opt in ("sgd", "grapes")]
    got = [(p.config.analog.device_overrides["dw_min"], p.config.analog.adc_bits, p.config.optimizer) for p in points]
    assert got == expected  # first axis slowest
    for p in points:
        assert p.config.analog.preset == "Idealized" and p.config.analog.device_overrides["dw_min_dtod"] == 0.0
        assert p.config.backend == "crossbar" and p.config.hidden == (8,)
        assert list(p.params) == ["device.dw_min", "periphery.adc_bits", "optimizer"]
    assert len({p.id for p in points}) == 8


def test_digital_points_ignore_hardware_axes_and_reference_adds_digital_twins():
    spec = spec_of({"device.dw_min": [0.001, 0.01], "optimizer": ["sgd", "grapes"], "seed": [0, 1]},
                   base={"backend": "crossbar"}, reference=True)
    points = spec.points()
    analog = [p for p in points if p.config.backend == "crossbar"]
    digital = [p for p in points if p.config.backend == "digital"]
    assert len(analog) == 8 and len(digital) == 4  # one digital twin per (optimizer, seed), not per dw_min
    assert all(p.reference and p.params["device.dw_min"] is None for p in digital)
    assert all(p.config.analog == spec.base.analog for p in digital)
    assert {(p.config.optimizer, p.config.seed) for p in digital} == {(o, s) for o in ("sgd", "grapes") for s in (0, 1)}

    mixed = spec_of({"backend": ["digital", "crossbar"], "device.dw_min": [0.001, 0.01]}).points()
    assert [p.config.backend for p in mixed] == ["digital", "crossbar", "crossbar"]


@pytest.mark.parametrize("backends", [["crossbar", "digital"], ["crossbar", "aihwkit"]])
def test_a_backend_axis_labels_digital_twins_digital(backends):
    """The twin of an analog point runs on digital weights: its ``backend`` parameter (the summary.csv column, the
    label, plan.json) must say ``digital``, not the analog backend of the point it was made from."""
    axes = {"backend": backends, "device.dw_min": [0.01, 0.1]}
    points = spec_of(axes, reference=True).points()
    digital = [p for p in points if p.config.backend == "digital"]
    assert len(digital) == 1 and digital[0].reference
    for p in points:
        assert p.params["backend"] == p.config.backend
    assert digital[0].label() == "backend=digital [digital]"


def test_digital_twins_keep_their_points_energy_table():
    """A digital run prices its operations with ``analog.energy_table`` too: sweeping the table gives each point's
    digital twin that point's table (not the base's), and the axis is not a hardware axis (it applies to digital
    points as well, so a digital-only sweep of it is valid)."""
    assert not resolve_path("analog.energy_table").is_hardware and resolve_path("analog.preset").is_hardware
    spec = spec_of({"analog.energy_table": ["a.json", "b.json"], "device.dw_min": [0.001, 0.01]},
                   base={"backend": "crossbar", "analog": {"energy_table": "base.json"}}, reference=True)
    points = spec.points()
    digital = [p for p in points if p.config.backend == "digital"]
    assert len(points) == 6 and len(digital) == 2              # one twin per table, not per dw_min
    assert sorted(p.config.analog.energy_table for p in digital) == ["a.json", "b.json"]
    for p in digital:
        assert p.params == {"analog.energy_table": p.config.analog.energy_table, "device.dw_min": None}
        assert p.config.analog.device_overrides == {} and p.config.analog.preset == spec.base.analog.preset
    only_digital = spec_of({"analog.energy_table": ["a.json", "b.json"]}).points()
    assert [p.config.analog.energy_table for p in only_digital] == ["a.json", "b.json"]


def test_a_boolean_axis_is_labelled_as_the_spec_writes_it(tmp_path):
    """``[true, false]`` in the spec read ``True`` / ``False`` (Python's spelling) in the points' labels (--dry-run,
    --status, the run's lines), the printed table and the plots' ticks."""
    from imc_grapes.sweep.report import format_summary

    spec = spec_of({"periphery.ideal_periphery": [True, False], "seed": [0]}, base={"backend": "crossbar"},
                   out=str(tmp_path / "o"))
    assert [p.label() for p in spec.points()] == ["periphery.ideal_periphery=true seed=0",
                                                  "periphery.ideal_periphery=false seed=0"]
    rows = format_summary(spec).splitlines()
    assert [r.split()[0] for r in rows[2:4]] == ["true", "false"]


def test_int_and_float_spellings_are_the_same_point():
    a = spec_of({"lr": [1]}).points()[0]
    b = spec_of({"lr": [1.0]}).points()[0]
    assert a.id == b.id == config_id(TrainConfig.from_dict({**TrainConfig().to_dict(), **TINY, "lr": 1.0}))


# ------------------------------------------------------------------------------------------ sampling


def sampled(n: int, seed: int) -> SweepSpec:
    return parse_spec({"base": {**TINY, "backend": "crossbar"}, "sample": {"n": n, "seed": seed}, "axes": {
        "device": {"dw_min": {"log_uniform": [1e-3, 1e-1]}, "up_down": {"uniform": [-0.2, 0.4]}},
        "periphery.adc_bits": {"int_uniform": [4, 6]}, "optimizer": {"choice": ["sgd", "grapes"]},
        "seed": [0, 1]}})


def test_samples_lie_in_their_ranges_and_are_reproducible():
    spec = sampled(400, seed=3)
    draws = spec.samples()
    assert len(draws) == 400 and draws == sampled(400, seed=3).samples() != sampled(400, seed=4).samples()
    dw = [d["device.dw_min"] for d in draws]
    assert all(1e-3 <= v <= 1e-1 for v in dw)
    # log-uniform: half the mass below the geometric mean 1e-2; binomial 4-sigma bound 4·sqrt(0.25/400) = 0.1
    assert abs(sum(v < 1e-2 for v in dw) / 400 - 0.5) < 0.1
    ud = [d["device.up_down"] for d in draws]
    assert all(-0.2 <= v <= 0.4 for v in ud) and abs(sum(ud) / 400 - 0.1) < 4 * 0.6 / math.sqrt(12 * 400)
    assert {d["periphery.adc_bits"] for d in draws} == {4, 5, 6}
    assert all(isinstance(d["periphery.adc_bits"], int) for d in draws)
    assert {d["optimizer"] for d in draws} == {"sgd", "grapes"}


def test_samples_are_crossed_with_the_grid_axes():
    spec = sampled(5, seed=0)
    points = spec.points()
    assert len(points) == 10  # 5 draws × seed [0, 1]
    draws = spec.samples()
    for k, p in enumerate(points):
        d = draws[k // 2]
        assert p.config.seed == k % 2
        assert p.config.analog.device_overrides["dw_min"] == d["device.dw_min"]
        assert p.config.analog.adc_bits == d["periphery.adc_bits"] and p.config.optimizer == d["optimizer"]


@settings(max_examples=20, deadline=None)
@given(lrs=st.lists(st.sampled_from([0.01, 0.02, 0.05, 0.1, 0.2]), min_size=1, max_size=4, unique=True),
       seeds=st.lists(st.integers(0, 50), min_size=1, max_size=3, unique=True),
       opts=st.lists(st.sampled_from(["sgd", "grapes", "layer-mean"]), min_size=1, max_size=3, unique=True))
def test_grid_size_and_distinct_ids(lrs, seeds, opts):
    points = spec_of({"lr": lrs, "seed": seeds, "optimizer": opts}).points()
    assert len(points) == len(lrs) * len(seeds) * len(opts)
    assert len({p.id for p in points}) == len(points)
    assert {(p.config.lr, p.config.seed, p.config.optimizer) for p in points} == \
        {(lr, s, o) for lr in lrs for s in seeds for o in opts}


# ------------------------------------------------------------------------------------------ examples


@pytest.mark.parametrize("path", sorted((REPO / "examples" / "sweeps").glob("*.toml")), ids=lambda p: p.stem)
def test_example_specs_are_valid_and_small(path):
    spec = load_spec(path)
    points = spec.points()
    assert 4 <= len(points) <= 40
    for p in points:  # minutes on 2 cores: an MNIST subset (or synthetic), a small MLP, ≤ 2 epochs
        assert p.config.dataset == "synthetic" or (p.config.train_subset or 60000) <= 5000
        assert p.config.epochs <= 2 and sum(p.config.hidden) <= 256
    assert any(p.config.backend != "digital" for p in points)
    assert "Scaling up" in path.read_text()
    assert tomllib.loads(path.read_text())  # plain TOML


def test_examples_cover_the_four_device_questions():
    names = {p.stem for p in (REPO / "examples" / "sweeps").glob("*.toml")}
    assert {"dw_min", "up_down", "adc_dac_bits", "c2c_noise"} <= names
    axes = {n: [a.name for a in load_spec(REPO / "examples" / "sweeps" / f"{n}.toml").axes]
            for n in ("dw_min", "up_down", "adc_dac_bits", "c2c_noise")}
    assert "device.dw_min" in axes["dw_min"] and "device.up_down" in axes["up_down"]
    assert {"periphery.adc_bits", "periphery.dac_bits"} <= set(axes["adc_dac_bits"])
    assert "device.dw_min_std" in axes["c2c_noise"]


def test_base_from_a_finished_run_then_base_overrides(tmp_path):
    from imc_grapes.io import write_json_atomic

    run_cfg = TrainConfig(dataset="synthetic", hidden=(24, 12), lr=0.05, rule="fa", backend="crossbar",
                          analog=AnalogSettings(preset="EcRam", adc_bits=6))
    write_json_atomic(tmp_path / "runs" / "results.json", {"status": "completed", "config": run_cfg.to_dict()})
    (tmp_path / "s.toml").write_text('[sweep]\nbase_from = "runs/results.json"\n[base]\nlr = 0.2\n'
                                     "[axes]\nseed = [0, 1]\n")
    points = load_spec(tmp_path / "s.toml").points()
    assert [p.config for p in points] == [run_cfg.replace(lr=0.2, seed=s) for s in (0, 1)]
    (tmp_path / "bad.toml").write_text('[sweep]\nbase_from = "nowhere.json"\n')
    with pytest.raises(SpecError, match="nowhere.json does not exist"):
        load_spec(tmp_path / "bad.toml")


@pytest.mark.parametrize("content, name, match", [
    ("[]", "list.json", r"base_from: .*list\.json must hold a JSON object .*got a list"),
    ("7", "num.json", r"base_from: .*num\.json must hold a JSON object .*got a int"),
    ("{bad", "bad.json", r"base_from: .*bad\.json is not valid JSON: Expecting property name"),
    ("x = [", "bad.toml", r"base_from: .*bad\.toml is not valid TOML"),
    (b"\xff\xfe{", "latin.json", r"base_from: .*latin\.json is not valid JSON"),
])
def test_base_from_file_that_is_no_config_is_a_spec_error_naming_the_file(tmp_path, content, name, match):
    target = tmp_path / name
    target.write_bytes(content if isinstance(content, bytes) else content.encode())
    (tmp_path / "s.toml").write_text(f'[sweep]\nbase_from = "{name}"\n[axes]\nseed = [0]\n')
    with pytest.raises(SpecError, match=match):
        load_spec(tmp_path / "s.toml")


def test_base_from_a_folder_is_a_spec_error(tmp_path):
    (tmp_path / "d.json").mkdir()
    (tmp_path / "s.toml").write_text('[sweep]\nbase_from = "d.json"\n[axes]\nseed = [0]\n')
    with pytest.raises(SpecError, match=r"base_from: cannot read .*d\.json"):
        load_spec(tmp_path / "s.toml")


@pytest.mark.parametrize("line, match", [
    ("out = 7", r"\[sweep\] out must be a non-empty string \(a path\), got 7"),
    ('out = ""', r"\[sweep\] out must be a non-empty string \(a path\), got ''"),
    ("out = [\"a\"]", r"\[sweep\] out must be a non-empty string"),
    ("base_from = 3", r"\[sweep\] base_from must be a non-empty string \(a path\), got 3"),
    ("name = 5", r"\[sweep\] name must be a non-empty string, got 5"),
    ('name = ".."', r"\[sweep\] name must be a non-empty name without '/', not '\.' or '\.\.' \(the default folder "
                    r"is runs/sweeps/<name>\), got '\.\.'"),
    ('name = "."', r"\[sweep\] name must be .*, got '\.'$"),
    ('name = "a/b"', r"\[sweep\] name must be .*, got 'a/b'$"),
    ("reference = 1", r"\[sweep\] reference must be true or false, got 1"),
    ('tail_evals = "x"', r"\[sweep\] tail_evals must be an integer"),
])
def test_sweep_table_keys_of_the_wrong_type_are_spec_errors(line, match):
    with pytest.raises(SpecError, match=match):
        parse_spec(tomllib.loads(f"[sweep]\n{line}\n[axes]\nseed = [0]\n"))


def test_a_choice_range_that_repeats_a_value_is_a_spec_error():
    """``{choice = ["sgd", "sgd"]}`` was accepted: the repeated value was drawn twice as often, with no word, where a
    grid axis that repeats a value is refused."""
    with pytest.raises(SpecError, match=r"^axis 'optimizer': Range choice must not repeat a value, got "
                                        r"\['sgd', 'grapes', 'sgd'\] \('sgd' more than once\)$"):
        parse_spec({"sweep": {}, "base": TINY, "axes": {"optimizer": {"choice": ["sgd", "grapes", "sgd"]}},
                    "sample": {"n": 2}})
    spec = parse_spec({"sweep": {}, "base": TINY, "axes": {"optimizer": {"choice": ["sgd", "grapes"]}},
                       "sample": {"n": 2}})
    assert {p.config.optimizer for p in spec.points()} <= {"sgd", "grapes"}


def test_tail_evals_beyond_a_points_evaluations_names_that_point():
    """``[sweep] tail_evals = 2`` with a 1-epoch point (1 evaluation) was accepted: the report averaged its single
    evaluation under the label 'last 2 evals'. The point with enough evaluations is fine; the other is named."""
    with pytest.raises(SpecError, match=r"^1 of 2 point\(s\) are invalid:\n  sweep 'sweep', point epochs=1: "
                                        r"\[sweep\] tail_evals must be at most the evaluations of a run, epochs × "
                                        r"evals_per_epoch = 1 × 1 = 1, got 2$"):
        spec_of({"epochs": [1, 2]}, tail_evals=2).points()
    assert [p.config.epochs for p in spec_of({"epochs": [2, 3]}, tail_evals=2).points()] == [2, 3]


@pytest.mark.parametrize("axes, match", [
    ({"lr": [0.1, 0.1]}, r"axis 'lr' must not repeat a value, got \[0\.1, 0\.1\] \(0\.1 more than once\)"),
    ({"lr": [1, 0.5, 1.0]}, r"axis 'lr' must not repeat a value"),          # 1 and 1.0: the same point
    ({"hidden": [[8], [16], [8]]}, r"axis 'hidden' must not repeat a value"),
])
def test_a_grid_axis_that_repeats_a_value_is_a_spec_error(axes, match):
    """A repeated value was merged into one point without a word: the axis ran fewer points than it lists."""
    with pytest.raises(SpecError, match=match):
        spec_of(axes)


@pytest.mark.parametrize("seed", [2 ** 64, -2 ** 63 - 1, 1.5])
def test_a_sample_seed_outside_torchs_range_is_a_spec_error(seed):
    """It reached torch.Generator.manual_seed, whose 'Overflow when unpacking long long' named no field."""
    with pytest.raises(SpecError, match=r"\[sample\] seed must be an integer in \[-2\^63, 2\^64\)"):
        parse_spec({"axes": {"lr": {"uniform": [0.01, 0.1]}}, "sample": {"n": 2, "seed": seed}})
    assert len(parse_spec({"axes": {"lr": {"uniform": [0.01, 0.1]}},
                           "sample": {"n": 2, "seed": -2 ** 63}}).samples()) == 2   # the range's ends work


def test_a_sweep_of_more_points_than_a_spec_may_list_is_a_spec_error():
    """[sample] n = 10^11 allocated the draws at once (800 GB) and ended in an out-of-memory traceback."""
    from imc_grapes.sweep.spec import MAX_POINTS

    with pytest.raises(SpecError, match=r"the sweep has 200000000000 points \(100000000000 samples × 2\), "
                                        r"more than the 1000000"):
        parse_spec({"axes": {"lr": {"uniform": [0.01, 0.1]}, "seed": [0, 1]}, "sample": {"n": 10 ** 11}})
    grid = {f"device.{k}": list(range(1, 11)) for k in ("dw_min", "up_down", "w_max", "w_min", "dw_min_std", "a")}
    with pytest.raises(SpecError, match=r"the sweep has 2000000 points \(10 × 10 × 10 × 10 × 10 × 10 × 2\)"):
        parse_spec({"base": {"backend": "crossbar"}, "axes": {**grid, "seed": [0, 1]}})   # 2·10^6 grid points
    assert MAX_POINTS == 1_000_000


@pytest.mark.parametrize("make, match", [
    (lambda p: p.mkdir(), r"cannot read the sweep spec .*s\.toml: Is a directory"),
    (lambda p: p.write_bytes(b"\xff\xfe lr = 1"), r".*s\.toml is not valid TOML: 'utf-8' codec can't decode"),
])
def test_a_spec_that_cannot_be_read_is_a_spec_error_naming_the_file(tmp_path, make, match):
    make(tmp_path / "s.toml")
    with pytest.raises(SpecError, match=match):
        load_spec(tmp_path / "s.toml")


def test_sweep_cli_reports_a_bad_sweep_table_as_a_usage_error(tmp_path, capsys):
    from imc_grapes.sweep.cli import main

    (tmp_path / "list.json").write_text("[]")
    for line, want in (("out = 7", "[sweep] out must be a non-empty string"),
                       ('base_from = "list.json"', "list.json must hold a JSON object")):
        (tmp_path / "s.toml").write_text(f"[sweep]\n{line}\n[axes]\nseed = [0]\n")
        assert main([str(tmp_path / "s.toml"), "--dry-run"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("imc-grapes sweep: error: ") and want in err and "Traceback" not in err


@pytest.mark.parametrize("mode", [[], ["--dry-run"], ["--status"], ["--report"]],
                         ids=["run", "dry-run", "status", "report"])
def test_standalone_sweep_rejects_an_empty_out(tmp_path, capsys, monkeypatch, mode):
    """``python -m imc_grapes.sweep SPEC --out ""`` (an unset shell variable) wrote into the current folder; it is the
    usage error of ``imc-grapes sweep --out ""`` (same message, exit code 2), before anything is run or written."""
    from imc_grapes.sweep.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.toml").write_text('[base]\ndataset = "synthetic"\nhidden = [8]\nepochs = 1\n[axes]\nlr = [0.1]\n')
    assert main(["s.toml", *mode, "--out", ""]) == 2
    captured = capsys.readouterr()
    assert captured.err == ("imc-grapes sweep: error: --out '': give a folder, or leave the option out for the "
                            "default\n") and captured.out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.toml"]


def test_dry_run_lists_the_validated_points(tmp_path, capsys):
    from imc_grapes.sweep.cli import main

    (tmp_path / "s.toml").write_text(f'[sweep]\nout = "{tmp_path / "o"}"\n[base]\ndataset = "synthetic"\n'
                                     'backend = "crossbar"\n[axes]\nperiphery.adc_bits = [4, 8]\n')
    assert main([str(tmp_path / "s.toml"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "2 valid points" in out and "periphery.adc_bits=4" in out and "periphery.adc_bits=8" in out
    assert not (tmp_path / "o").exists()


def test_dry_run_names_a_swept_backend_once(tmp_path, capsys):
    """Each point's line shows its backend once: in a column of its own, or only in its label (``backend=…``) when
    ``backend`` is a sweep axis."""
    from imc_grapes.sweep.cli import main

    (tmp_path / "s.toml").write_text(f'[sweep]\nout = "{tmp_path / "o"}"\n[base]\ndataset = "synthetic"\n'
                                     '[axes]\nbackend = ["crossbar", "digital"]\n')
    assert main([str(tmp_path / "s.toml"), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()[1:]
    assert [line.split()[1:] for line in lines] == [["backend=crossbar"], ["backend=digital"]]
    (tmp_path / "s.toml").write_text(f'[sweep]\nout = "{tmp_path / "o"}"\n[base]\ndataset = "synthetic"\n'
                                     'backend = "crossbar"\n[axes]\nseed = [0]\n')
    assert main([str(tmp_path / "s.toml"), "--dry-run"]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[1:] == ["crossbar", "seed=0"]


def test_dry_run_rejects_an_energy_table_that_cannot_be_read(tmp_path, capsys):
    """``analog.energy_table`` naming a missing file (or one that is not a table) fails the dry run and the run
    before any point starts, with a message naming the field and the path; a readable table passes."""
    from imc_grapes.sweep.cli import main

    table = tmp_path / "table.json"
    spec = tmp_path / "s.toml"
    for content, code, want in ((None, 2, "(no such file)"), ("[1]", 2, "must hold a JSON object"),
                                ('{"pulse_pj": 2.0}', 0, "2 valid points")):
        if content is not None:
            table.write_text(content)
        spec.write_text(f'[sweep]\nout = "{tmp_path / "o"}"\n[base]\ndataset = "synthetic"\n[base.analog]\n'
                        f'energy_table = "{table}"\n[axes]\nseed = [0, 1]\n')
        assert main([str(spec), "--dry-run"]) == code
        captured = capsys.readouterr()
        if code:
            assert captured.err.startswith("imc-grapes sweep: error: AnalogSettings.energy_table")
            assert str(table) in captured.err and want in captured.err and captured.out == ""
        else:
            assert want in captured.out
    table.unlink()
    assert main([str(spec)]) == 2 and "(no such file)" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------------------ fields without effect

EXACT = "makes every MVM exact (no DAC, ADC or output noise)"


@pytest.mark.parametrize("base", [
    {"periphery": {"ideal_periphery": True, "out_noise": 0.1}},
    {"analog": {"ideal_periphery": True, "out_noise": 0.1}},
    {"backend": "crossbar", "analog": {"ideal_periphery": True}, "periphery": {"out_noise": 0.1}},
])
def test_a_base_with_an_ideal_periphery_and_an_output_noise_is_a_spec_error(base):
    """`train --ideal-periphery --out-noise 0.1` is refused; the same two fields in a spec's [base] ran every point
    with exact MVMs and recorded (and reported) an output noise that no MVM had."""
    with pytest.raises(SpecError) as e:
        spec_of({"seed": [0]}, base=base)
    assert message(e) == (f"[base] analog.out_noise = 0.1: analog.ideal_periphery = true {EXACT}, so this field "
                          "would change nothing: leave it at its default (0.06), or set ideal_periphery = false")
    with pytest.raises(SpecError, match=r"^\[base\] analog.out_noise = 0: analog.ideal_periphery = true makes"):
        SweepSpec(base=TrainConfig(analog=AnalogSettings(ideal_periphery=True, out_noise=0.0)))


def test_an_ideal_periphery_keeps_the_fields_that_still_have_an_effect():
    """The default output noise, spelled out, is no contradiction; DAC/ADC bits still price the converters."""
    spec = spec_of({"seed": [0]}, base={"backend": "crossbar", "periphery": {"ideal_periphery": True,
                                                                              "out_noise": 0.06, "adc_bits": 4}})
    (point,) = spec.points()
    a = point.config.analog
    assert (a.ideal_periphery, a.out_noise, a.adc_bits) == (True, 0.06, 4)


@pytest.mark.parametrize("axes, base, what, fix", [
    ({"periphery.out_noise": [0.0, 0.1]}, {"periphery": {"ideal_periphery": True}},
     "axis 'periphery.out_noise'", "drop it"),
    ({"analog.out_noise": {"uniform": [0.0, 0.1]}, "periphery.ideal_periphery": [True]}, {},
     "axis 'analog.out_noise'", "drop it"),
    ({"periphery.ideal_periphery": [True], "seed": [0, 1]}, {"periphery": {"out_noise": 0.1}},
     "[base] analog.out_noise = 0.1", "leave it at its default (0.06)"),
])
def test_an_output_noise_that_no_analog_point_reads_is_a_spec_error(axes, base, what, fix):
    """When every analog point has an ideal periphery, an out_noise axis only repeats one run per value (and an
    out_noise in [base] describes no point): refused as the command line refuses --out-noise with
    --ideal-periphery, before anything runs."""
    sample = {"sample": {"n": 2}} if any(isinstance(v, dict) for v in axes.values()) else {}
    spec = parse_spec({"base": {**TINY, "backend": "crossbar", **base}, "axes": axes, **sample})
    with pytest.raises(SpecError) as e:
        spec.points()
    thing = "the axis" if what.startswith("axis") else "this field"
    assert message(e) == (f"{what}: every analog point has analog.ideal_periphery = true, which {EXACT}, so {thing} "
                          f"would change nothing: {fix}, or give some analog points ideal_periphery = false (e.g. an "
                          "axis periphery.ideal_periphery = [false, true])")


def test_a_digital_sweep_with_an_output_noise_in_its_base_is_refused_as_digital_not_as_ideal():
    """No analog point, no periphery: the out_noise check has nothing to say; the field is refused because a
    digital point reads no analog settings but its energy table (test_an_analog_setting_of_an_all_digital_sweep_...)."""
    with pytest.raises(SpecError) as e:
        spec_of({"seed": [0, 1]}, base={"periphery": {"out_noise": 0.1}}).points()
    assert message(e).startswith("[base] analog.out_noise = 0.1: every point is digital (backend = 'digital')")
    assert "ideal_periphery" not in message(e)


def test_an_ideal_periphery_crossed_with_an_output_noise_axis_runs_and_names_the_repeated_points():
    """A full-factorial design over both fields is legitimate (its non-ideal points differ), so it is not refused,
    and every point keeps its own id; the ideal points that differ only in out_noise build the same simulator
    configuration (the same run), and repeated_points names them: per seed the ideal point at the first out_noise
    value runs, the two others repeat it — 2 seeds × 2 = 4 of the 12 points."""
    from imc_grapes.backends import crossbar_config_from
    from imc_grapes.sweep.spec import repeated_points

    spec = spec_of({"periphery.ideal_periphery": [False, True], "periphery.out_noise": [0.0, 0.06, 0.1],
                    "seed": [0, 1]}, base={"backend": "crossbar"}, reference=True)
    points = spec.points()
    analog = [p for p in points if not p.reference]
    assert len(analog) == 12 and len({p.id for p in analog}) == 12
    assert len(points) == 14                                    # + one digital twin per seed (analog settings reset)
    repeated = repeated_points(points)
    assert [(p.params["periphery.out_noise"], p.params["seed"]) for p in repeated] == [
        (0.06, 0), (0.06, 1), (0.1, 0), (0.1, 1)]
    assert all(p.config.analog.ideal_periphery for p in repeated)
    ideal = [crossbar_config_from(p.config.analog) for p in analog if p.config.analog.ideal_periphery]
    assert all(c == ideal[0] for c in ideal)                    # out_noise reaches no MVM: the same simulator
    noisy = {crossbar_config_from(p.config.analog).forward.out_noise for p in analog
             if not p.config.analog.ideal_periphery}
    assert noisy == {0.0, 0.06, 0.1}                            # the non-ideal points differ
    assert repeated_points(spec_of({"periphery.out_noise": [0.0, 0.1]}, base={"backend": "crossbar"}).points()) == []


def test_a_device_override_at_the_presets_value_gives_the_point_of_the_run_without_it():
    """ReRamSB's dw_min is 0.002 (devices/presets.py): ``[base] device.dw_min = 0.002`` and an axis value 0.002 give
    the points (the ids) of the spec without them, each point keeping the earlier id that the override gave it
    (legacy_ids: where a folder of an earlier version holds it); two spellings of one device in one axis are one
    point, run once, with the earlier id of each."""
    from imc_grapes.sweep.spec import legacy_config_id

    plain = spec_of({"seed": [0, 1]}, base={"backend": "crossbar"}).points()
    spelt = spec_of({"seed": [0, 1]}, base={"backend": "crossbar", "device": {"dw_min": 0.002}}).points()
    assert [p.id for p in spelt] == [p.id for p in plain]
    assert [p.legacy_ids for p in spelt] == [(legacy_config_id(p.config),) for p in spelt]
    assert all(p.legacy_ids == () for p in plain) and spelt[0].legacy_ids != spelt[1].legacy_ids

    axis = spec_of({"device.dw_min": [0.002, 0.02], "seed": [0, 1]}, base={"backend": "crossbar"}).points()
    assert [p.id for p in axis[:2]] == [p.id for p in plain] and len({p.id for p in axis}) == 4

    tables = spec_of({"analog": {"device_overrides": [{}, {"dw_min": 0.002}, {"dw_min": 2e-3, "w_max": 1.25}]}},
                     base={"backend": "crossbar"}).points()
    assert len(tables) == 1 and tables[0].id == plain[0].id              # three spellings of ReRamSB: one point
    assert tables[0].params == {"analog.device_overrides": {}}            # the first spelling's
    merged = [plain[0].config.replace(analog=AnalogSettings(device_overrides=o))
              for o in ({"dw_min": 0.002}, {"dw_min": 0.002, "w_max": 1.25})]
    assert tables[0].legacy_ids == tuple(legacy_config_id(c) for c in merged)


def test_axis_values_that_spell_one_device_are_noted_by_dry_run_and_the_run(tmp_path, capsys):
    """Values of a whole device_overrides table axis that spell one device (ReRamSB's dw_min is 0.002 and its w_max
    1.25: devices/presets.py) were merged into one point silently: 3 values x 2 seeds gave 4 points. --dry-run and
    the run's first lines now say which values denote the same point, once per axis; a design without such values
    (another value, a hardware axis over digital points, whose merging is by design) has no note."""
    from imc_grapes.sweep.cli import main
    from imc_grapes.sweep.spec import merged_values, merged_values_note

    axes = {"analog": {"device_overrides": [{}, {"dw_min": 0.002}, {"dw_min": 0.02}]}, "seed": [0, 1]}
    points = spec_of(axes, base={"backend": "crossbar"}).points()
    assert [(p.params["analog.device_overrides"], p.params["seed"]) for p in points] == [
        ({}, 0), ({}, 1), ({"dw_min": 0.02}, 0), ({"dw_min": 0.02}, 1)]
    assert [p.merged_params for p in points] == [({"analog.device_overrides": {"dw_min": 0.002}, "seed": 0},),
                                                 ({"analog.device_overrides": {"dw_min": 0.002}, "seed": 1},), (), ()]
    assert merged_values(points) == {"analog.device_overrides": [[{}, {"dw_min": 0.002}]]}
    note = ("2 values of axis 'analog.device_overrides' denote the same point as another of its values ({} = "
            "{'dw_min': 0.002}: a device override at the preset's own value is the same device): each such point "
            "runs once, under its first value")
    assert merged_values_note("analog.device_overrides", [[{}, {"dw_min": 0.002}]]) == note
    three = spec_of({"analog": {"device_overrides": [{"dw_min": 0.002}, {"dw_min": 0.02}, {},
                                                     {"dw_min": 2e-3, "w_max": 1.25}]}},
                    base={"backend": "crossbar"}).points()
    assert merged_values(three) == {"analog.device_overrides": [[{"dw_min": 0.002}, {},
                                                                 {"dw_min": 0.002, "w_max": 1.25}]]}
    assert merged_values(spec_of({"device.dw_min": [0.002, 0.02]}, base={"backend": "crossbar"}).points()) == {}
    digital = spec_of({"backend": ["digital", "crossbar"], "device.dw_min": [0.01, 0.02]}).points()
    assert len(digital) == 3 and merged_values(digital) == {}      # the digital point: merged by design, no note

    spec = tmp_path / "s.toml"
    spec.write_text(f'[sweep]\nout = "{tmp_path / "o"}"\n[base]\ndataset = "synthetic"\nbackend = "crossbar"\n'
                    "[axes]\nanalog.device_overrides = [{}, {dw_min = 0.002}, {dw_min = 0.02}]\nseed = [0, 1]\n")
    assert main([str(spec), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("sweep 's': 4 valid points") and lines[-1] == f"note: {note}"
    logged: list[str] = []

    class Nothing:      # runs no point: only the first lines matter
        name, ships_files = "local", False

        def run(self, tasks, on_start, on_result):
            pass

    run_sweep(load_spec(spec), executor=Nothing(), verify_data=False, log=logged.append)
    assert logged[1:] == [f"  note: {note}"]


def test_repeated_points_still_counts_the_ideal_points_with_a_redundant_device_override():
    """The repeated-points note (ideal periphery: out_noise changes nothing) is unaffected by a device override at the
    preset's value: of 2 dw_min × 2 ideal_periphery × 2 out_noise = 8 points (8 ids), the ideal points at
    out_noise 0.06 repeat those at 0.0, one per dw_min: 2."""
    from imc_grapes.sweep.spec import repeated_points

    points = spec_of({"device.dw_min": [0.002, 0.02], "periphery.ideal_periphery": [False, True],
                      "periphery.out_noise": [0.0, 0.06]}, base={"backend": "crossbar"}).points()
    assert len(points) == 8 and len({p.id for p in points}) == 8
    assert [(p.params["device.dw_min"], p.params["periphery.out_noise"]) for p in repeated_points(points)] == [
        (0.002, 0.06), (0.02, 0.06)]


def test_dry_run_notes_the_points_that_repeat_another_points_run(tmp_path, capsys):
    from imc_grapes.sweep.cli import main

    (tmp_path / "s.toml").write_text(f'[sweep]\nout = "{tmp_path / "o"}"\n[base]\ndataset = "synthetic"\n'
                                     'backend = "crossbar"\n[axes]\nperiphery.ideal_periphery = [false, true]\n'
                                     'periphery.out_noise = [0.0, 0.1]\n')
    assert main([str(tmp_path / "s.toml"), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("sweep 's': 4 valid points") and len(lines) == 6
    assert lines[-1] == ("note: 1 of the 4 points repeat the run of another point (same numbers): they differ from "
                         f"it only in analog.out_noise, and analog.ideal_periphery = true {EXACT}")
    (tmp_path / "s.toml").write_text(f'[sweep]\nout = "{tmp_path / "o"}"\n[base]\ndataset = "synthetic"\n'
                                     'backend = "crossbar"\n[axes]\nperiphery.out_noise = [0.0, 0.1]\n')
    assert main([str(tmp_path / "s.toml"), "--dry-run"]) == 0
    assert "note:" not in capsys.readouterr().out
    assert not (tmp_path / "o").exists()


def test_draws_that_repeat_an_earlier_draw_are_one_point_and_the_dry_run_and_the_run_say_so(tmp_path, capsys):
    """``[sample] n = 10`` of a sampled axis with few values (``int_uniform = [4, 5]``) gives at most 2 distinct
    draws, each one point: 4 points with 2 seeds, not the 20 one might count; --dry-run and the run's first lines
    said nothing of the 8 (or 16) draws that repeat another."""
    from imc_grapes.sweep.cli import main

    def write(axes: str, n: int) -> Path:
        (tmp_path / "s.toml").write_text(f'[sweep]\nout = "{tmp_path / "o"}"\n[base]\ndataset = "synthetic"\n'
                                         'hidden = [8]\ntrain_subset = 50\ntest_subset = 20\nbatch_size = 25\n'
                                         f'[axes]\n{axes}\n[sample]\nn = {n}\n')
        return tmp_path / "s.toml"

    spec = load_spec(write("epochs = { int_uniform = [1, 2] }\nseed = [0, 1]", 10))
    assert sorted((p.config.epochs, p.config.seed) for p in spec.points()) == [(1, 0), (1, 1), (2, 0), (2, 1)]
    assert spec.repeated_draws() == 10 - 2
    assert main([str(tmp_path / "s.toml"), "--dry-run"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "note: 8 of the 10 draws ([sample] n) repeat an earlier draw's values (the sampled axes have few values: "
        "int_uniform, choice): each distinct draw is one point, run once")

    spec = load_spec(write("lr = { choice = [0.1] }", 3))       # one value: every draw after the first repeats it
    assert spec.repeated_draws() == 2 and [p.config.lr for p in spec.points()] == [0.1]
    lines: list[str] = []
    run_sweep(spec, verify_data=False, log=lines.append)
    assert lines[1] == ("  note: 2 of the 3 draws ([sample] n) repeat an earlier draw's values (the sampled axes have "
                        "few values: int_uniform, choice): each distinct draw is one point, run once")
    assert spec_of({"lr": [0.1, 0.2]}).repeated_draws() == 0
    assert parse_spec({"axes": {"lr": {"log_uniform": [0.01, 0.1]}}, "sample": {"n": 5}}).repeated_draws() == 0


def test_status_and_report_note_the_points_that_repeat_another_points_run(tmp_path, capsys):
    """--status and the printed summary of --report say what --dry-run says, in its words (nothing has run: the
    note is about the spec's points, whatever their state); a sweep without such points has no note. (--report
    needs a finished point of the sweep: here one recorded by hand, no point is trained.)"""
    from imc_grapes.sweep import SweepStore
    from imc_grapes.sweep.cli import main

    note = ("note: 1 of the 4 points repeat the run of another point (same numbers): they differ from it only in "
            f"analog.out_noise, and analog.ideal_periphery = true {EXACT}")
    spec = tmp_path / "s.toml"
    spec.write_text(f'[sweep]\nout = "{tmp_path / "o"}"\n[base]\ndataset = "synthetic"\nbackend = "crossbar"\n'
                    "[axes]\nperiphery.ideal_periphery = [false, true]\nperiphery.out_noise = [0.0, 0.1]\n")
    assert main([str(spec), "--status"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"sweep 's': no sweep has run in {tmp_path / 'o'} yet (it does not exist): 4 points would run"
    assert lines[1] == f"  {note}"
    assert lines[2] == "pending:" and len(lines) == 7
    store, points = SweepStore(tmp_path / "o"), load_spec(spec).points()
    store.write_plan(load_spec(spec), points)                                   # as a sweep writes it first
    assert points[0].params == {"periphery.ideal_periphery": False, "periphery.out_noise": 0.0}   # below too
    store.record(points[0], {"status": "done", "history": [{"epoch": 1, "test_acc": 0.5}]})    # one finished
    assert main([str(spec), "--report"]) == 0
    out = capsys.readouterr().out
    summary = out.split("\nwrote ")[0].splitlines()
    assert summary[-1] == note and out.count("repeat the run") == 1
    assert main([str(spec), "--dry-run"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == note     # the same line in all three
    spec.write_text(f'[sweep]\nout = "{tmp_path / "o"}"\n[base]\ndataset = "synthetic"\nbackend = "crossbar"\n'
                    "[axes]\nperiphery.out_noise = [0.0, 0.1]\n")
    for options in (["--status"], ["--report"]):
        assert main([str(spec), *options]) == 0
        assert "repeat the run" not in capsys.readouterr().out


TAKE_MOMENTUM = ("every point's base_optimizer is {}, which take{} no momentum (only sgd and rmsprop do), so {} "
                 "would change nothing: {}, or give some points base_optimizer = 'sgd' or 'rmsprop' (in [base], or "
                 "by an axis, e.g. base_optimizer = ['sgd', {!r}])")


@pytest.mark.parametrize("axes, base, what, bases, thing, fix", [
    ({"seed": [0, 1]}, {"base_optimizer": "adam", "momentum": 0.9},
     "[base] momentum = 0.9", "adam", "this field", "leave it at its default (0)"),
    ({"momentum": [0.0, 0.9]}, {"base_optimizer": "adam"}, "axis 'momentum'", "adam", "the axis", "drop it"),
    ({"momentum": {"uniform": [0.5, 0.9]}, "base_optimizer": ["adamw", "adam"]}, {"backend": "crossbar"},
     "axis 'momentum'", "adam or adamw", "the axis", "drop it"),
    ({"base_optimizer": ["adam", "adagrad"]}, {"momentum": 0.5}, "[base] momentum = 0.5", "adagrad or adam",
     "this field", "leave it at its default (0)"),
])
def test_a_momentum_that_no_base_optimizer_takes_is_a_spec_error(axes, base, what, bases, thing, fix):
    """`train --momentum 0.9 --base-optimizer adam` is refused (exit 2); a spec whose every point has a base
    optimizer without momentum (make_optimizer passes it to sgd and rmsprop only) ran one run per momentum value,
    or recorded a momentum that no run had: refused before anything runs, naming the [base] field or the axis."""
    sample = {"sample": {"n": 2}} if any(isinstance(v, dict) for v in axes.values()) else {}
    spec = parse_spec({"base": {**TINY, **base}, "axes": axes, **sample})
    with pytest.raises(SpecError) as e:
        spec.points()
    one = " or " not in bases
    assert message(e) == f"{what}: " + TAKE_MOMENTUM.format(bases, "s" if one else "", thing, fix,
                                                            bases.split(" or ")[0])


@pytest.mark.parametrize("axes, base, runs", [
    ({"base_optimizer": ["sgd", "adam"], "momentum": [0.0, 0.9]}, {},               # the sgd points read it
     [("sgd", 0.0), ("sgd", 0.9), ("adam", 0.0), ("adam", 0.9)]),
    ({"base_optimizer": ["adam", "sgd"]}, {"base_optimizer": "adam", "momentum": 0.9},   # [base] one overridden
     [("adam", 0.9), ("sgd", 0.9)]),
    ({"seed": [0]}, {"base_optimizer": "rmsprop", "momentum": 0.9}, [("rmsprop", 0.9)]),
    ({"seed": [0]}, {"base_optimizer": "adam", "momentum": 0.0}, [("adam", 0.0)]),   # the default, spelled out
])
def test_a_momentum_that_some_points_take_is_accepted(axes, base, runs):
    """A design where some points' base optimizer takes the momentum is legitimate (the others are its control)."""
    points = spec_of(axes, base=base).points()
    assert [(p.config.base_optimizer, p.config.momentum) for p in points] == runs


GRAPES_READ = ("no point uses GRAPES (every point's optimizer is sgd): only grapes, grapes-local, layer-mean read "
               "the importance, so {} would change nothing: {}, or give some points a GRAPES optimizer (optimizer "
               "= 'grapes' in [base], or by an axis, e.g. optimizer = ['sgd', 'grapes'])")


@pytest.mark.parametrize("axes, base, what, thing, fix", [
    ({"seed": [0]}, {"analog": {"importance": "array"}}, "[base] analog.importance = 'array'", "this field",
     "leave it at its default ('exact')"),
    ({"analog.importance_every": [1, 4]}, {}, "axis 'analog.importance_every'", "the axis", "drop it"),
    ({"optimizer": ["sgd"]}, {"analog": {"importance": "array", "importance_every": 4}},
     "[base] analog.importance = 'array', [base] analog.importance_every = 4", "these fields",
     "leave them at their defaults ('exact', 1)"),
    ({"analog.importance": ["exact", "array"], "analog.importance_every": [1, 2]}, {},
     "axis 'analog.importance', axis 'analog.importance_every'", "these axes", "drop them"),
    ({"analog.importance_every": [2, 4]}, {"analog": {"importance": "array", "importance_every": 3}},
     "axis 'analog.importance_every', [base] analog.importance = 'array'", "these settings",
     "drop the axis and leave the field at its default ('exact')"),   # [base] importance_every: the axis sets it
])
def test_an_importance_that_no_point_reads_is_a_spec_error(axes, base, what, thing, fix):
    """`compare --optimizers sgd --importance array` is refused (exit 2): only the GRAPES optimizers read the
    importance, so a spec of SGD points with an importance axis ran one run per value (or, in [base], recorded a
    setting no run used): refused before anything runs, naming each [base] field and axis."""
    spec = spec_of(axes, base={"backend": "crossbar", **base})
    with pytest.raises(SpecError) as e:
        spec.points()
    assert message(e) == f"{what}: " + GRAPES_READ.format(thing, fix)


def test_an_importance_on_digital_sgd_points_is_refused_too():
    """No point uses GRAPES: the rule holds whatever the backend (the command line refuses it on any hardware)."""
    with pytest.raises(SpecError) as e:
        spec_of({"seed": [0, 1]}, base={"analog": {"importance_every": 4}}).points()
    assert message(e) == "[base] analog.importance_every = 4: " + GRAPES_READ.format(
        "this field", "leave it at its default (1)")


def test_settings_that_base_from_brings_in_are_not_refused_as_without_effect(tmp_path):
    """A digital SGD baseline of an analog GRAPES run with momentum: base_from brings the run's importance and
    momentum into [base], which no point reads (SGD, adam) — the spec file did not write them, so the importance and
    momentum checks do not name them (they named "[base] analog.importance = 'array'", a line of no file, and the
    way out, writing the defaults into [base], would have changed the baseline's config); written in [base], the
    same importance is refused."""
    from imc_grapes.io import write_json_atomic

    run_cfg = TrainConfig(dataset="synthetic", hidden=(8,), backend="crossbar", optimizer="grapes", momentum=0.9,
                          analog=AnalogSettings(importance="array", importance_every=4))
    write_json_atomic(tmp_path / "results.json", {"status": "completed", "config": run_cfg.to_dict()})
    (tmp_path / "s.toml").write_text('[sweep]\nbase_from = "results.json"\n[base]\nbackend = "digital"\n'
                                     'optimizer = "sgd"\nbase_optimizer = "adam"\n[axes]\nseed = [0, 1]\n')
    points = load_spec(tmp_path / "s.toml").points()
    assert [p.config for p in points] == [run_cfg.replace(backend="digital", optimizer="sgd", base_optimizer="adam",
                                                          seed=s) for s in (0, 1)]
    (tmp_path / "own.toml").write_text('[sweep]\nbase_from = "results.json"\n[base]\noptimizer = "sgd"\n'
                                       '[base.analog]\nimportance_every = 2\n[axes]\nseed = [0, 1]\n')
    with pytest.raises(SpecError) as e:
        load_spec(tmp_path / "own.toml").points()
    assert message(e) == "[base] analog.importance_every = 2: " + GRAPES_READ.format(
        "this field", "leave it at its default (1)")


def test_an_output_noise_that_base_from_brings_under_an_ideal_periphery_is_not_refused(tmp_path):
    """A run made in Python with ``ideal_periphery = true`` and another ``out_noise`` (the command line refuses the
    pair, the library does not): a spec that takes its base from it is not refused for the noise, which the file did
    not write; written in [base], the same noise is."""
    from imc_grapes.io import write_json_atomic

    run_cfg = TrainConfig(dataset="synthetic", hidden=(8,), backend="crossbar",
                          analog=AnalogSettings(ideal_periphery=True, out_noise=0.1))
    write_json_atomic(tmp_path / "results.json", {"status": "completed", "config": run_cfg.to_dict()})
    (tmp_path / "s.toml").write_text('[sweep]\nbase_from = "results.json"\n[axes]\nseed = [0, 1]\n')
    assert [p.config for p in load_spec(tmp_path / "s.toml").points()] == [run_cfg.replace(seed=s) for s in (0, 1)]
    (tmp_path / "own.toml").write_text('[sweep]\nbase_from = "results.json"\n[base.analog]\nout_noise = 0.2\n'
                                       '[axes]\nseed = [0, 1]\n')
    with pytest.raises(SpecError, match=r"^\[base\] analog\.out_noise = 0\.2: .*ideal_periphery = true"):
        load_spec(tmp_path / "own.toml")


@pytest.mark.parametrize("axes, base, runs", [
    ({"optimizer": ["sgd", "grapes"], "analog.importance": ["exact", "array"]}, {},   # sgd: the control line
     [("sgd", "exact", 1), ("sgd", "array", 1), ("grapes", "exact", 1), ("grapes", "array", 1)]),
    ({"optimizer": ["sgd", "layer-mean"]}, {"analog": {"importance": "array", "importance_every": 4}},
     [("sgd", "array", 4), ("layer-mean", "array", 4)]),
    ({"seed": [0]}, {"optimizer": "grapes-local", "analog": {"importance_every": 4}}, [("grapes-local", "exact", 4)]),
    ({"seed": [0]}, {"analog": {"importance": "exact", "importance_every": 1}}, [("sgd", "exact", 1)]),  # defaults
])
def test_an_importance_that_some_points_read_is_accepted(axes, base, runs):
    """As in examples/sweeps/importance_offset.toml: SGD points next to GRAPES ones are the design's control line."""
    points = spec_of(axes, base={"backend": "crossbar", **base}).points()
    assert [(p.config.optimizer, p.config.analog.importance, p.config.analog.importance_every)
            for p in points] == runs


DIGITAL_READS = ("every point is digital (backend = 'digital'), and a digital run reads no analog setting but "
                 "analog.energy_table and evaluates no inference_times, so {} would change nothing: {}, or give some "
                 "points an analog backend (backend = 'crossbar' or 'aihwkit' in [base], or by an axis, e.g. backend "
                 "= ['digital', 'crossbar']); an analog run's settings that [sweep] base_from brings in are accepted "
                 "(a digital baseline of that run)")


@pytest.mark.parametrize("axes, base, what, thing, fix", [
    ({"seed": [0, 1]}, {"analog": {"dac_bits": 4}}, "[base] analog.dac_bits = 4", "this field",
     "leave it at its default (7)"),
    ({"seed": [0]}, {"periphery": {"ideal_periphery": True}}, "[base] analog.ideal_periphery = true", "this field",
     "leave it at its default (false)"),
    ({"seed": [0]}, {"inference_times": [1, 3600]}, "[base] inference_times = [1.0, 3600.0]", "this field",
     "leave it at its default ([])"),
    ({"inference_times": [[1], [3600]]}, {}, "axis 'inference_times'", "the axis", "drop it"),
    ({"optimizer": ["grapes"]}, {"analog": {"preset": "EcRam", "importance": "array"}, "device": {"dw_min": 0.5}},
     "[base] analog.preset = 'EcRam', [base] analog.importance = 'array', [base] device.dw_min = 0.5",
     "these fields", "leave them at their defaults ('ReRamSB', 'exact', {dw_min})"),
    ({"inference_times": [[1], [3600]]}, {"analog": {"out_noise": 0.0}},
     "axis 'inference_times', [base] analog.out_noise = 0", "these settings",
     "drop the axis and leave the field at its default (0.06)"),
])
def test_an_analog_setting_of_an_all_digital_sweep_is_a_spec_error(axes, base, what, thing, fix):
    """`train --backend digital --dac-bits 4` (or --inference-times) is refused: a digital run reads neither. A spec
    whose every point is digital and whose own [base] writes such a setting (or an axis sweeps inference_times) ran
    digital points that recorded hardware they never had (or one digital run per inference_times value): refused
    before anything runs, naming each field, its default and the way out. A device entry's default is the value
    of the base's preset (EcRam's dw_min: the preset table)."""
    spec = spec_of(axes, base=base)
    with pytest.raises(SpecError) as e:
        spec.points()
    fix = fix.format(dw_min=f"{get_preset('EcRam').dw_min:g}")
    assert message(e) == f"{what}: " + DIGITAL_READS.format(thing, fix)


def test_an_analog_setting_of_an_all_digital_sweep_is_refused_by_the_command_before_anything_runs(tmp_path, capsys):
    from imc_grapes.sweep.cli import main

    spec = tmp_path / "s.toml"
    spec.write_text(f'[sweep]\nout = "{tmp_path / "o"}"\n[base]\ndataset = "synthetic"\n[base.analog]\n'
                    'adc_bits = 4\n[axes]\nseed = [0, 1]\n')
    for options in ([], ["--dry-run"], ["--status"]):
        assert main([str(spec), *options]) == 2
        err = capsys.readouterr().err
        assert err == ("imc-grapes sweep: error: [base] analog.adc_bits = 4: "
                       + DIGITAL_READS.format("this field", "leave it at its default (9)") + "\n")
    assert not (tmp_path / "o").exists()


def test_a_digital_baseline_keeps_the_analog_settings_that_base_from_brings_in(tmp_path):
    """A digital baseline of an analog run: base_from brings the run's device, periphery and inference times into
    [base], which the spec file did not write, so they are not refused; its points are the run's config on the
    digital backend (the analog settings kept, as every digital point keeps the base's). A setting the file writes
    itself is still refused, and only it is named."""
    from imc_grapes.io import write_json_atomic

    run_cfg = TrainConfig(dataset="synthetic", hidden=(8,), backend="crossbar", inference_times=(1.0, 3600.0),
                          analog=AnalogSettings(preset="EcRam", adc_bits=6, out_noise=0.1,
                                                device_overrides={"dw_min": 0.5}))
    write_json_atomic(tmp_path / "runs" / "results.json", {"status": "completed", "config": run_cfg.to_dict()})
    (tmp_path / "s.toml").write_text('[sweep]\nbase_from = "runs/results.json"\n[base]\nbackend = "digital"\n'
                                     "[axes]\nseed = [0, 1]\n")
    points = load_spec(tmp_path / "s.toml").points()
    assert [p.config for p in points] == [run_cfg.replace(backend="digital", seed=s) for s in (0, 1)]
    (tmp_path / "own.toml").write_text('[sweep]\nbase_from = "runs/results.json"\n[base]\nbackend = "digital"\n'
                                       "[base.periphery]\ndac_bits = 5\n[axes]\nseed = [0, 1]\n")
    with pytest.raises(SpecError) as e:
        load_spec(tmp_path / "own.toml").points()
    assert message(e) == "[base] analog.dac_bits = 5: " + DIGITAL_READS.format("this field",
                                                                               "leave it at its default (7)")


@pytest.mark.parametrize("axes, sweep, backends", [
    ({"backend": ["digital", "crossbar"]}, {}, ["digital", "crossbar"]),
    ({"seed": [0]}, {"reference": True}, ["crossbar", "digital"]),   # [base] crossbar, with its digital twin
])
def test_analog_settings_of_a_sweep_with_an_analog_point_are_accepted(axes, sweep, backends):
    """Some point reads them: the digital points are the design's baseline (they keep the base's analog settings,
    recorded but not used)."""
    base = {"analog": {"dac_bits": 4}, "inference_times": [3600]}
    if "backend" not in axes:
        base["backend"] = "crossbar"
    points = spec_of(axes, base=base, **sweep).points()
    assert [p.config.backend for p in points] == backends
    assert all(p.config.analog.dac_bits == 4 and p.config.inference_times == (3600.0,) for p in points)


def test_a_spec_built_in_code_counts_every_base_field_as_written():
    """Without base_fields (a SweepSpec made in code, not by parse_spec) the whole base is the spec's own; given,
    only the fields it names are (any spelling of a path: periphery.* is analog.*)."""
    base = TrainConfig(dataset="synthetic", analog=AnalogSettings(dac_bits=4))
    with pytest.raises(SpecError, match=r"^\[base\] analog\.dac_bits = 4: every point is digital"):
        SweepSpec(base=base).points()
    assert [p.config.analog.dac_bits for p in SweepSpec(base=base, base_fields=("dataset",)).points()] == [4]
    assert SweepSpec(base=base, base_fields=["periphery.dac_bits", "dataset"]).base_fields == (
        "analog.dac_bits", "dataset")
    with pytest.raises(SpecError, match=r"^\[base\] analog\.dac_bits = 4: every point is digital"):
        SweepSpec(base=base, base_fields=("periphery.dac_bits",)).points()
    with pytest.raises(SpecError, match=r"^SweepSpec\.base_fields must be None or a list of field paths \(e\.g\. "
                                        r"'lr', 'analog\.dac_bits', 'device\.dw_min'\), got 'lr'$"):
        SweepSpec(base=base, base_fields="lr")
    with pytest.raises(SpecError, match=r"^SweepSpec\.base_fields: unknown field 'lrr'"):
        SweepSpec(base=base, base_fields=("lrr",))
