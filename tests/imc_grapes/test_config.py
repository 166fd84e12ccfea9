"""TrainConfig validation: every invalid value is rejected with a message naming the field and the range."""
import re

import pytest

from imc_grapes.config import ConfigError, TrainConfig, base_optimizer_names


@pytest.mark.parametrize("field,value,message", [
    ("dataset", "cifar-100", "dataset must be one of mnist, fashion-mnist, synthetic"),
    ("model", "resnet", "model must be one of mlp, cnn"),
    ("lr", 0.0, "lr must be > 0"),
    ("lr", -0.1, "lr must be > 0"),
    ("lr", float("nan"), "lr must be > 0"),
    ("batch_size", 0, "batch_size must be ≥ 1"),
    ("epochs", 0, "epochs must be ≥ 1"),
    ("dropout", 1.0, r"dropout must be in \[0, 1\)"),
    ("rule", "hebb", "rule must be one of bp, fa, dfa"),
    ("optimizer", "adamw", "optimizer must be one of sgd, grapes, grapes-local, layer-mean"),
    ("base_optimizer", "lion", "base_optimizer must be one of"),
    ("activation", "gelu", "activation must be one of relu, tanh"),
    ("hidden", (256, 0), "hidden must be one or more widths ≥ 1"),
    ("momentum", -1.0, "momentum must be ≥ 0"),
    ("device", "tpu", "device must be cpu, cuda, cuda:N or auto"),
    ("train_subset", 0, "train_subset must be ≥ 1"),
    ("drop_last", 1, "drop_last must be true or false"),
])
def test_invalid_values_are_rejected(field, value, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**{field: value})


def test_drop_last_needs_one_full_batch():
    with pytest.raises(ConfigError, match="^TrainConfig.train_subset 50 < TrainConfig.batch_size 64, so drop_last "
                                          "leaves no batch"):
        TrainConfig(drop_last=True, train_subset=50)
    assert TrainConfig(drop_last=False, train_subset=50).train_subset == 50
    assert TrainConfig(drop_last=True, train_subset=64).train_subset == 64      # one full batch


@pytest.mark.parametrize("command", ["train", "compare"])
def test_a_subset_smaller_than_one_batch_names_the_options(command, tmp_path, capsys):
    """`train --train-subset 10` (drop_last, batch 64) said "drop_last leaves no batch: train_subset 10 <
    batch_size 64", the config's field names: the command line names its options (as typed) before it."""
    from imc_grapes.cli import main

    assert main([command, "--dataset", "synthetic", "--train-subset", "10", "--batch-size=32",
                 "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr() == ("", f"imc-grapes {command}: error: --train-subset, --batch-size: "
                                       "TrainConfig.train_subset 10 < TrainConfig.batch_size 32, so drop_last leaves "
                                       "no batch: train on more samples or use a smaller batch, or set drop_last "
                                       "false (--no-drop-last)\n")
    assert not (tmp_path / "out").exists()


def test_batching_is_described_for_reports():
    assert TrainConfig().batching() == "batch 64 (partial last batch left out)"
    assert TrainConfig(drop_last=False, batch_size=32).batching() == "batch 32 (partial last batch kept)"


def test_cnn_with_feedback_alignment_is_rejected():
    with pytest.raises(ConfigError, match="--rule bp with --model cnn"):
        TrainConfig(model="cnn", rule="fa")


def test_from_dict_rejects_unknown_fields_and_round_trips():
    cfg = TrainConfig(dataset="synthetic", hidden=(8, 4), optimizer="grapes", lr=0.05)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert TrainConfig.from_dict(cfg.replace(drop_last=False).to_dict()).drop_last is False
    old = cfg.replace(drop_last=False).to_dict()
    del old["drop_last"]                                # a config saved before the field existed
    assert TrainConfig.from_dict(old) == cfg and cfg.drop_last is True   # loads with the current default
    with pytest.raises(ConfigError, match="unknown train config field.*'learning_rate'.*valid:"):
        TrainConfig.from_dict({"learning_rate": 0.1})


def test_grapes_mode_mapping_and_base_optimizers():
    assert TrainConfig(optimizer="sgd").grapes_mode is None
    assert TrainConfig(optimizer="grapes").grapes_mode == "propagated"
    assert TrainConfig(optimizer="grapes-local").grapes_mode == "local"
    assert TrainConfig(optimizer="layer-mean").grapes_mode == "layer-mean"
    assert {"sgd", "adam", "adamw", "rmsprop"} <= set(base_optimizer_names())


def test_fields_added_later_keep_saved_runs_and_sweep_ids():
    """A config field added after results were saved (``LATER_FIELDS``) does not change what identifies a run while it
    holds its earlier-behaviour value: a saved config without it still resumes (compare), and sweep point ids stay
    those of the sweeps already on disk (the committed importance-offset sweep's summary.csv, written before
    ``analog.importance_offset_correction`` existed)."""
    import csv
    import dataclasses
    import hashlib
    import json
    from pathlib import Path

    from imc_grapes.config import LATER_FIELDS, config_differences, identity_dict
    from imc_grapes.sweep import load_spec
    from imc_grapes.sweep.spec import config_id

    assert ("analog", "importance_offset_correction") in LATER_FIELDS
    cfg = TrainConfig(backend="crossbar")     # an analog run: every analog setting identifies it
    saved = cfg.to_dict()
    del saved["analog"]["importance_offset_correction"]        # as results.json files of earlier versions hold it
    del saved["cuda_graph"]                                    # (added later still)
    assert identity_dict(cfg.to_dict()) == saved
    assert config_differences(saved, cfg.to_dict()) == []
    assert config_differences(saved, TrainConfig.from_dict(saved).to_dict()) == []
    corrected = cfg.replace(analog=dataclasses.replace(cfg.analog, importance_offset_correction=True))
    assert config_differences(saved, corrected.to_dict()) == ["analog"]     # the top-level field that differs
    assert identity_dict(corrected.to_dict())["analog"]["importance_offset_correction"] is True
    assert identity_dict(cfg.replace(device="cuda", cuda_graph=True).to_dict())["cuda_graph"] is True
    blob = json.dumps(saved, sort_keys=True, default=str, separators=(",", ":"))
    assert config_id(cfg) == hashlib.sha1(blob.encode()).hexdigest()[:12] != config_id(corrected)

    root = Path(__file__).resolve().parents[2] / "docs" / "results" / "importance-offset"
    with open(root / "summary.csv") as f:
        on_disk = {row["point"] for row in csv.DictReader(f)}
    assert {p.id for p in load_spec(root / "spec.toml").points()} == on_disk


@pytest.mark.parametrize("preset,overrides,kept", [
    ("ReRamSB", {"dw_min": 0.002}, {}),                     # ReRamSB's own dw_min (aihwkit's preset: 0.002)
    ("ReRamSB", {"dw_min": 2e-3}, {}),                      # the same number, spelt otherwise
    ("ReRamSB", {"mult_noise": False}, {}),                 # a bool field at the preset's value
    ("GokmenVlasov", {"w_max": 1}, {}),                     # an int for the preset's 1.0: the same device
    ("GokmenVlasov", {"dw_min": 0.0016, "up_down": 0.2}, {"up_down": 0.2}),    # only the redundant entry goes
    ("ReRamSB", {"dw_min": 0.0021}, {"dw_min": 0.0021}),    # another value: kept
    ("ReRamSB", {"up_down": -0.0}, {"up_down": -0.0}),      # -0.0 is not taken for the preset's 0.0
    ("GokmenVlasov", {"dw_min": 0.002}, {"dw_min": 0.002}),  # ReRamSB's dw_min, not GokmenVlasov's (0.0016)
])
def test_device_overrides_at_the_presets_value_do_not_change_a_runs_identity(preset, overrides, kept):
    """An override that sets a device field to the value its preset has anyway is the same device, so the same run:
    identity_dict leaves it out (the preset values are aihwkit's, devices/presets.py), and a saved run with it
    resumes as the run without it."""
    from imc_grapes.backends.settings import AnalogSettings
    from imc_grapes.config import config_differences, identity_dict

    cfg = TrainConfig(backend="crossbar", analog=AnalogSettings(preset=preset, device_overrides=overrides))
    assert identity_dict(cfg.to_dict())["analog"]["device_overrides"] == kept
    assert cfg.analog.device_overrides == overrides         # the config itself keeps what it was given
    plain = TrainConfig(backend="crossbar", analog=AnalogSettings(preset=preset, device_overrides=kept))
    assert config_differences(cfg.to_dict(), plain.to_dict()) == []
    # the identity of earlier versions keeps every override
    assert identity_dict(cfg.to_dict(), device_defaults=False)["analog"]["device_overrides"] == overrides


def test_identity_of_a_damaged_saved_config_keeps_its_overrides():
    """A saved config whose preset is no preset name, whose overrides are no dict, or whose override is a number for a
    bool field (which the device model refuses) has nothing taken for redundant."""
    from imc_grapes.config import identity_dict

    base = TrainConfig(backend="crossbar").to_dict()
    for analog in ({"preset": "NoSuchPreset", "device_overrides": {"dw_min": 0.002}},
                   {"preset": "reramsb", "device_overrides": {"dw_min": 0.002}},       # PRESETS' spelling only
                   {"preset": "ReRamSB", "device_overrides": {"mult_noise": 0}},       # ReRamSB's mult_noise: False
                   {"preset": "ReRamSB", "device_overrides": ["dw_min"]}):
        saved = {**base, "analog": {**base["analog"], **analog}}
        assert identity_dict(saved)["analog"]["device_overrides"] == analog["device_overrides"]


def test_point_ids_of_configs_without_a_redundant_override_are_unchanged():
    """Sweep point ids of configs without a device override at its preset's value are those of the version before
    such overrides were left out (values computed by that version and copied here): sweep folders on disk keep
    them. A config with one gets the id of the same config without it; its earlier id is still known
    (legacy_config_id)."""
    from imc_grapes.backends.settings import AnalogSettings
    from imc_grapes.sweep.spec import config_id, legacy_config_id

    crossbar = TrainConfig(dataset="synthetic", backend="crossbar")
    dw = TrainConfig(dataset="synthetic", backend="crossbar", analog=AnalogSettings(device_overrides={"dw_min": 0.01}))
    gv = TrainConfig(dataset="synthetic", backend="crossbar", lr=0.05, seed=3,
                     analog=AnalogSettings(preset="GokmenVlasov", device_overrides={"up_down": 0.2, "dw_min_std": 1.0}))
    assert config_id(TrainConfig()) == "852fbd220fc2"
    assert config_id(crossbar) == "68feb93d5c5d"
    assert config_id(dw) == "a1e62d604254"
    assert config_id(gv) == "4a8a938543ba"
    assert config_id(TrainConfig(dataset="synthetic", optimizer="grapes", epochs=2)) == "0b2bb8418664"
    # with a redundant override (ReRamSB's dw_min 0.002, w_max 1.25): the id of the config without it, and the
    # earlier version's id as legacy_config_id
    redundant = crossbar.replace(analog=AnalogSettings(device_overrides={"dw_min": 0.002}))
    mixed = crossbar.replace(analog=AnalogSettings(device_overrides={"dw_min": 0.01, "w_max": 1.25}))
    assert config_id(redundant) == "68feb93d5c5d" and legacy_config_id(redundant) == "e8a6cca6bfd4"
    assert config_id(mixed) == "a1e62d604254" and legacy_config_id(mixed) == "c70148dd01ae"
    assert legacy_config_id(gv) == config_id(gv) and legacy_config_id(crossbar) == config_id(crossbar)


def test_the_id_of_a_config_recorded_in_a_point_json_is_its_current_one(tmp_path):
    """config_dict_id of the config a point.json recorded (written and read back as JSON) is the id this version
    gives that config (the values computed by the version before redundant overrides were left out, as above): a
    config recorded with a redundant override has the id of the same config without it."""
    from imc_grapes.backends.settings import AnalogSettings
    from imc_grapes.io import read_json, write_json_atomic
    from imc_grapes.sweep.spec import config_dict_id

    crossbar = TrainConfig(dataset="synthetic", backend="crossbar")
    redundant = crossbar.replace(analog=AnalogSettings(device_overrides={"dw_min": 0.002}))
    mixed = crossbar.replace(analog=AnalogSettings(device_overrides={"dw_min": 0.01, "w_max": 1.25}))
    for cfg, expected in ((TrainConfig(), "852fbd220fc2"), (crossbar, "68feb93d5c5d"), (redundant, "68feb93d5c5d"),
                          (mixed, "a1e62d604254")):
        saved = read_json(write_json_atomic(tmp_path / "point.json", {"config": cfg.to_dict()}))["config"]
        assert config_dict_id(saved) == expected


@pytest.mark.parametrize("device", ["cuda:abc", "cuda:-1", "cudaX", "cuda:", "cuda:0:1", "cuda: 1", "cpu:0", "",
                                    None, 0])
def test_malformed_device_strings_are_rejected(device):
    with pytest.raises(ConfigError, match=r"^TrainConfig\.device must be cpu, cuda, cuda:N or auto \(N an integer "
                                          r"≥ 0\), got "):
        TrainConfig(device=device)


@pytest.mark.parametrize("device", ["cpu", "auto", "cuda", "cuda:0", "cuda:3"])
def test_valid_device_strings_pass_without_cuda(device):
    """Validation parses the string only: a CUDA device is checked for when the run resolves it."""
    assert TrainConfig(device=device).device == device


@pytest.mark.parametrize("device", ["cuda:abc", "cuda:-1", "cudaX"])
def test_cli_reports_a_malformed_device_without_traceback(tmp_path, capsys, device):
    from imc_grapes.cli import main

    assert main(["train", "--dataset", "synthetic", "--hidden", "8", "--device", device, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "TrainConfig.device must be cpu, cuda, cuda:N or auto" in err and "Traceback" not in err


@pytest.mark.parametrize("name,why", [("lbfgs", "needs a closure"), ("sparseadam", "needs sparse gradients")])
def test_base_optimizers_that_cannot_work_are_rejected(name, why):
    assert name not in base_optimizer_names()
    with pytest.raises(ConfigError, match=rf"^TrainConfig\.base_optimizer must be one of .*, got '{name}' \(.*{why}"):
        TrainConfig(base_optimizer=name)


@pytest.mark.parametrize("name,tail", [("adm", r"; did you mean 'adam'\?"), ("rmsprp", r"; did you mean 'rmsprop'\?"),
                                       ("lbfgs", r" \(LBFGS needs a closure .*\)"), ("optimizer", ""), ("zzz", ""),
                                       (3, "")])
def test_make_optimizer_and_optimizer_class_name_the_valid_base_optimizers(name, tail):
    """``make_optimizer`` (a cfg that is not a checked TrainConfig) and ``optimizer_class`` refused an unknown name
    as "unknown base_optimizer 'adm'" without the valid names; they now give TrainConfig's message: the valid
    names (``sgd`` and ``adam`` among them), then why for an unsupported one or a did-you-mean for a close one. The
    names are those TrainConfig takes: ``torch.optim.Optimizer`` itself and ``lbfgs`` are refused too."""
    import types

    import torch

    from imc_grapes.backends.optim import make_optimizer, optimizer_class

    listed = r"must be one of (\w+, )*adam, (\w+, )*sgd(, \w+)*, got " + re.escape(repr(name)) + tail + "$"
    with pytest.raises(ValueError, match=r"^optimizer_class: name " + listed):
        optimizer_class(name)
    cfg = types.SimpleNamespace(base_optimizer=name, lr=0.1, weight_decay=0.0, momentum=0.0, cuda_graph=False)
    with pytest.raises(ValueError, match=r"^make_optimizer: cfg\.base_optimizer " + listed):
        make_optimizer(cfg, torch.nn.Linear(2, 2).parameters())
    with pytest.raises(ConfigError, match=r"^TrainConfig\.base_optimizer " + listed):
        TrainConfig(base_optimizer=name)
    assert optimizer_class("adamw") is torch.optim.AdamW and optimizer_class("sgd") is torch.optim.SGD


def test_every_listed_base_optimizer_takes_a_step():
    import torch

    from imc_grapes.backends.optim import make_optimizer

    for name in base_optimizer_names():
        layer = torch.nn.Linear(3, 2, bias=False)           # muon takes 2-d parameters only
        opt = make_optimizer(TrainConfig(base_optimizer=name, lr=0.01), layer.parameters())
        layer(torch.randn(4, 3)).sum().backward()
        opt.step()


def test_muon_is_rejected_where_digital_parameters_are_not_matrices():
    """``muon`` orthogonalises 2-D updates only: the digital CNN (4-D kernels) is rejected by the config, naming the
    field; the bias-free MLP and the analog CNN (no digital parameter) are valid; a bias handed to make_optimizer
    gets the same clear message instead of torch's error from deep inside the optimizer."""
    import torch

    from imc_grapes.backends import build_network
    from imc_grapes.backends.optim import make_optimizer

    with pytest.raises(ConfigError, match=r"^TrainConfig\.base_optimizer 'muon' updates 2-D parameters .* cnn model "
                                          r"on the digital backend"):
        TrainConfig(model="cnn", base_optimizer="muon")
    mlp = TrainConfig(dataset="synthetic", hidden=(8,), base_optimizer="muon")
    net = build_network(mlp, (1, 28, 28), 10, torch.device("cpu"))
    assert [tuple(p.shape) for p in net.optimizer.param_groups[0]["params"]] == [(8, 784), (10, 8)]
    cnn = TrainConfig(dataset="synthetic", model="cnn", base_optimizer="muon", backend="crossbar")
    assert build_network(cnn, (1, 28, 28), 10, torch.device("cpu")).optimizer is None
    layer = torch.nn.Linear(3, 2)
    with pytest.raises(ValueError, match=r"^TrainConfig\.base_optimizer 'muon' updates 2-D parameters .* "
                                         r"shape\(s\) \[\(2,\)\]"):
        make_optimizer(mlp, layer.parameters())



def test_muon_skips_a_frozen_matrix_or_one_without_a_gradient_as_torch_optimizers_do():
    """``muon`` (with weight decay and momentum, as make_optimizer builds it) over three matrices: one frozen
    (``requires_grad=False``: no gradient), one whose gradient is None in this step (not in the loss): neither moves
    nor gets optimizer state, no crash, as ``torch.optim.SGD`` skips them; the one in the loss moves. Frozen 1-D
    parameters (a bias) stay refused by name (torch's Muon refuses them at construction, frozen or not)."""
    import torch

    from imc_grapes.backends.optim import make_optimizer

    gen = torch.Generator().manual_seed(0)
    used, frozen, unused = (torch.nn.Parameter(torch.randn(3, 4, generator=gen)) for _ in range(3))
    frozen.requires_grad_(False)
    before = [p.detach().clone() for p in (used, frozen, unused)]
    cfg = TrainConfig(dataset="synthetic", hidden=(8,), base_optimizer="muon", lr=0.05, weight_decay=0.1,
                      momentum=0.9)
    opt = make_optimizer(cfg, [used, frozen, unused])
    for _ in range(2):
        opt.zero_grad()
        ((used + frozen) @ torch.ones(4)).square().sum().backward()
        opt.step()
    assert frozen.grad is None and unused.grad is None
    assert torch.equal(frozen.detach(), before[1]) and torch.equal(unused.detach(), before[2])
    assert not torch.equal(used.detach(), before[0])
    assert frozen not in opt.state and unused not in opt.state and used in opt.state
    bias = torch.nn.Parameter(torch.zeros(3), requires_grad=False)
    with pytest.raises(ValueError, match=r"^TrainConfig\.base_optimizer 'muon' updates 2-D parameters .* \[\(3,\)\]"):
        make_optimizer(cfg, [used, bias])

@pytest.mark.parametrize("command", ["train", "compare"])
def test_help_does_not_offer_unsupported_base_optimizers(capsys, command):
    from imc_grapes.cli import main

    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = capsys.readouterr().out.lower()
    assert "--base-optimizer" in out and "lbfgs" not in out and "sparseadam" not in out


INF = float("inf")


@pytest.mark.parametrize("field,value,message", [
    ("seed", 0.5, r"seed must be an integer"),
    ("seed", "a", r"seed must be an integer"),
    ("seed", True, r"seed must be an integer"),
    ("seed", 2 ** 64, r"seed must be an integer in \[-2\^63, 2\^64\)"),
    ("epochs", 1.5, r"epochs must be an integer ≥ 1, got 1\.5"),
    ("epochs", True, r"epochs must be an integer ≥ 1, got True"),
    ("batch_size", 32.5, r"batch_size must be an integer ≥ 1, got 32\.5"),
    ("batch_size", "32", r"batch_size must be an integer ≥ 1, got '32'"),
    ("evals_per_epoch", 1.0, r"evals_per_epoch must be an integer ≥ 1"),
    ("val_holdout", 1.5, r"val_holdout must be an integer ≥ 0"),
    ("train_subset", 500.0, r"train_subset must be an integer ≥ 1 \(or None for all\)"),
    ("test_subset", True, r"test_subset must be an integer ≥ 1 \(or None for all\)"),
    ("lr", True, r"lr must be a number > 0, got True"),
    ("lr", "0.1", r"lr must be a number > 0, got '0\.1'"),
    ("lr", INF, r"lr must be > 0 \(and finite\)"),
    ("momentum", True, r"momentum must be a number ≥ 0, got True"),
    ("momentum", "0.9", r"momentum must be a number ≥ 0"),
    ("momentum", INF, r"momentum must be ≥ 0 \(and finite\)"),
    ("weight_decay", False, r"weight_decay must be a number ≥ 0"),
    ("weight_decay", INF, r"weight_decay must be ≥ 0 \(and finite\)"),
    ("dropout", "0.1", r"dropout must be a number in \[0, 1\)"),
    ("dropout", True, r"dropout must be a number in \[0, 1\)"),
    ("hidden", "256", r"hidden must be a list of one or more integer widths ≥ 1, got '256'"),
    ("hidden", 8, r"hidden must be a list of one or more integer widths ≥ 1, got 8"),
    ("hidden", (8.5,), r"hidden must be a list of one or more integer widths"),
    ("hidden", (True,), r"hidden must be a list of one or more integer widths"),
    ("hidden", (), r"hidden must be one or more widths ≥ 1"),
    ("inference_times", "3600", r"inference_times must be a list of numbers ≥ 0 \(seconds\), got '3600'"),
    ("inference_times", 3600, r"inference_times must be a list of numbers ≥ 0"),
    ("inference_times", ("1",), r"inference_times must be a list of numbers ≥ 0"),
    ("inference_times", (True,), r"inference_times must be a list of numbers ≥ 0"),
    ("inference_times", (1.0, INF), r"inference_times must be ≥ 0 seconds \(and finite\)"),
    ("inference_times", (1.0, -1.0), r"inference_times must be ≥ 0 seconds \(and finite\), got \[1\.0, -1\.0\]"),
    ("inference_times", (float("nan"),), r"inference_times must be ≥ 0 seconds \(and finite\), got \[nan\]"),
    ("inference_times", (3600, 1.0, 3600.0), r"inference_times must not give a time twice \(each result is keyed "
                                            r"by its time\), got \[3600\.0, 1\.0, 3600\.0\]$"),
    ("drop_last", "no", r"drop_last must be true or false, got 'no'"),
    ("data_root", 5, r"data_root must be None or the path of a folder"),
    ("data_root", "", r"data_root must be None or the path of a folder \(an empty path names none: None for the "
                      r"default cache\), got ''"),
    ("extra", [], r"extra must be a dict"),
    ("dataset", ["synthetic"], r"dataset must be one of"),
    ("optimizer", ["sgd"], r"optimizer must be one of"),
    ("base_optimizer", ["sgd"], r"base_optimizer must be one of"),
    ("backend", None, r"backend must be one of"),
])
def test_field_types_are_checked_before_ranges(field, value, message):
    """A value of the wrong type gets a message naming the field and what it takes, never a TypeError from a
    comparison (``'>' not supported between 'str' and 'int'``) or a late crash in the run."""
    with pytest.raises(ConfigError, match=rf"^TrainConfig\.{message}"):
        TrainConfig(**{field: value})


def test_type_message_exact():
    with pytest.raises(ConfigError, match=r"^TrainConfig\.lr must be a number > 0, got '0\.1'$"):
        TrainConfig(lr="0.1")


def test_valid_values_of_the_checked_types_pass():
    import numpy as np

    cfg = TrainConfig(lr=1, momentum=0, weight_decay=0, dropout=0, seed=-1, hidden=[8, np.int64(4)],
                      inference_times=[1, 3600.0], train_subset=128, test_subset=None, batch_size=np.int64(32))
    assert cfg.lr == 1 and cfg.hidden == (8, 4) and type(cfg.hidden[1]) is int
    assert cfg.inference_times == (1.0, 3600.0)
    assert TrainConfig(seed=2 ** 64 - 1).seed == 2 ** 64 - 1


def test_check_distinct_names_the_option_and_the_repeats():
    from imc_grapes.config import check_distinct

    check_distinct("seeds", [0, 1, 2])
    check_distinct("seeds", [])
    with pytest.raises(ConfigError, match=r"^--seed must not repeat a value, got \[0, 1, 0, 1, 2\] \(0, 1 more than "
                                          r"once\)$"):
        check_distinct("--seed", [0, 1, 0, 1, 2])
    with pytest.raises(ConfigError, match=r"^--optimizer must not repeat a value, got \['sgd', 'sgd'\]"):
        check_distinct("--optimizer", ("sgd", "sgd"))


def test_a_digital_run_is_identified_without_the_analog_settings_it_ignores():
    """Resume (compare, experiment) tells a digital run apart only by the analog settings it uses (its energy table),
    an analog run by every analog setting; a digital run is trained and recorded with the others at their defaults."""
    import dataclasses

    from imc_grapes.backends import AnalogSettings
    from imc_grapes.config import BACKENDS, DIGITAL_ANALOG_FIELDS, config_differences

    changed = {"preset": "EcRam", "device_overrides": {"dw_min": 0.003}, "tile_size": 32, "dac_bits": 4,
               "adc_bits": 6, "out_noise": 0.0, "ideal_periphery": True, "importance": "array",
               "importance_every": 3, "importance_g_offset": 0.1, "importance_offset_correction": True,
               "sat_probe_every": 0, "energy_table": "table.json"}
    assert set(changed) == {f.name for f in dataclasses.fields(AnalogSettings)}, "every analog setting is checked"
    for backend in BACKENDS:
        cfg = TrainConfig(backend=backend)
        for name, value in changed.items():
            other = cfg.replace(analog=dataclasses.replace(cfg.analog, **{name: value}))
            same = backend == "digital" and name not in DIGITAL_ANALOG_FIELDS
            differences = [] if same else ["analog"]        # the top-level field that holds the setting
            assert config_differences(other.to_dict(), cfg.to_dict()) == differences, (backend, name)
            assert config_differences(cfg.to_dict(), other.to_dict()) == differences, (backend, name)
            assert (other.normalised() == cfg.normalised()) is same, (backend, name)
    ecram = AnalogSettings(preset="EcRam", tile_size=32, energy_table="table.json")
    assert TrainConfig(analog=ecram).normalised().analog == AnalogSettings(energy_table="table.json")
    assert TrainConfig(backend="crossbar", analog=ecram).normalised().analog == ecram
    cfg = TrainConfig()
    assert cfg.normalised() is cfg


def test_hidden_defaults_to_the_models_own_widths():
    """Without ``hidden`` each model gets its own: the MLP 256-256 hidden units, the CNN 16 and 32 channels (it used
    to get the MLP's 256-256 as conv channels, a 16× wider, ≈ 200× costlier network than the documented CNN)."""
    from imc_grapes.cli import build_parser, train_configs
    from imc_grapes.models import build_model

    assert TrainConfig().hidden == (256, 256)
    assert TrainConfig(model="cnn").hidden == (16, 32)
    assert TrainConfig(model="cnn", hidden=[8]).hidden == (8,)
    assert TrainConfig(model="cnn").to_dict()["hidden"] == [16, 32]          # the record names the widths used
    cnn = build_model("cnn", input_shape=(1, 28, 28), n_classes=10, hidden=TrainConfig(model="cnn").hidden)
    assert [m.out_channels for m in cnn.hidden_layers()] == [16, 32]
    for argv, widths in ((["train", "--model", "cnn"], (16, 32)), (["train"], (256, 256)),
                         (["train", "--model", "cnn", "--hidden", "4", "8"], (4, 8)),
                         (["compare", "--model", "cnn"], (16, 32))):
        args = build_parser().parse_args(argv)
        if argv[0] == "train":
            assert train_configs(args)[0].hidden == widths, argv
        else:
            from imc_grapes.cli import compare_spec
            assert compare_spec(args).base.hidden == widths, argv


def test_seeds_equal_modulo_2_to_the_32_are_refused_wherever_seeds_are_listed():
    """torch's CPU generator (initial weights, data order) uses a seed's low 32 bits only: seeds 0 and 2^32 train
    the same network, which a list of seeds would count twice. Measured here: the same initial weights."""
    import torch

    from imc_grapes.cli import main
    from imc_grapes.compare import CompareSpec
    from imc_grapes.config import check_seeds_apart

    assert torch.equal(torch.rand(3, generator=torch.Generator().manual_seed(0)),
                       torch.rand(3, generator=torch.Generator().manual_seed(2 ** 32)))
    check_seeds_apart("seeds", [0, 1, 2, 2 ** 32 + 3])                          # all apart
    for seeds, pair in (([0, 1, 2 ** 32], "0 and 4294967296"), ([-1, 2 ** 32 - 1], "-1 and 4294967295")):
        with pytest.raises(ConfigError, match=f"^seeds lists the seeds {pair}, which give the same run"):
            check_seeds_apart("seeds", seeds)
        with pytest.raises(ConfigError, match=f"^seeds lists the seeds {pair}"):
            CompareSpec(base=TrainConfig(dataset="synthetic"), seeds=seeds)
        with pytest.raises(ConfigError, match=f"^tune_seeds lists the seeds {pair}"):
            CompareSpec(base=TrainConfig(dataset="synthetic"), tune_seeds=seeds)
    assert main(["train", "--dataset", "synthetic", "--seed", "0", str(2 ** 32)]) == 2


@pytest.mark.parametrize("device, cuda_available, used", [
    ("auto", False, "cpu"), ("auto", True, "cuda"),
    ("auto", None, "auto"), ("auto", "yes", "auto"),          # not recorded (or not a bool): as it is
    ("cpu", True, "cpu"), ("cuda", False, "cuda"), ("cuda:1", True, "cuda:1")])
def test_device_run_on_resolves_only_auto_and_only_with_a_recorded_cuda_flag(device, cuda_available, used,
                                                                             monkeypatch):
    """`auto` is the device it resolved to (cuda with CUDA, else cpu, as TrainConfig.resolved_device); any other
    device, or auto without a recorded bool, stays as given. as_run_on puts that into a copy of the config. (No
    CUDA here, as on a machine without a GPU: a bare cuda stays cuda.)"""
    import torch

    from imc_grapes.config import as_run_on, device_run_on

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    config = {"device": device, "lr": 0.1}
    assert device_run_on(config, cuda_available) == used
    assert as_run_on(config, cuda_available) == {"device": used, "lr": 0.1}
    assert config == {"device": device, "lr": 0.1}                # not changed in place
    assert as_run_on({"lr": 0.1}, cuda_available) == {"lr": 0.1}  # no device: none added


def test_names_of_the_same_gpu_are_the_same_device_where_cuda_is_available(monkeypatch):
    """A run saved with device cuda:0 and the same run given cuda (torch's current GPU: GPU 0 on a one-GPU machine)
    were different configurations, compared literally. Where CUDA is available, device_run_on now names a bare cuda
    (also auto resolved to it) cuda:<current index>, so those compare equal; another GPU, or the CPU, still
    differs. Before CUDA is initialised the current GPU is 0 (choosing another initialises it), told without
    initialising CUDA; after, torch.cuda.current_device() says. A name torch does not read is left as it is."""
    import torch

    from imc_grapes.config import as_run_on, config_differences, device_named, device_run_on

    names = ("cuda", "cuda:0", "cuda:1", "cpu", "auto")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: pytest.fail("CUDA initialised to name a device"))
    assert [device_run_on({"device": d}, True) for d in names] == ["cuda:0", "cuda:0", "cuda:1", "cpu", "cuda:0"]
    assert [device_run_on({"device": "auto"}, flag) for flag in (False, None)] == ["cpu", "auto"]
    assert [device_named(d) for d in ("CUDA", "cuda: 1", 3, None)] == ["CUDA", "cuda: 1", 3, None]

    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)         # e.g. after torch.cuda.set_device(1)
    assert [device_run_on({"device": d}, True) for d in names] == ["cuda:1", "cuda:0", "cuda:1", "cpu", "cuda:1"]

    def differences(saved: str, given: str) -> list[str]:
        return config_differences(as_run_on({"device": saved, "lr": 0.1}, True),
                                  as_run_on({"device": given, "lr": 0.1}, True))

    assert differences("cuda:1", "cuda") == [] and differences("auto", "cuda:1") == []
    assert differences("cuda:0", "cuda") == ["device"] and differences("cpu", "cuda") == ["device"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)      # no CUDA here: compared as given
    assert differences("cuda:0", "cuda") == ["device"] and differences("cuda", "cuda") == []
