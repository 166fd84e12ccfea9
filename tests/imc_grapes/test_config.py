"""TrainConfig validation: every invalid value is rejected with a message naming the field and the range."""
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
    with pytest.raises(ConfigError, match="drop_last leaves no batch: train_subset 50 < batch_size 64"):
        TrainConfig(drop_last=True, train_subset=50)
    assert TrainConfig(drop_last=False, train_subset=50).train_subset == 50


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

    from imc_grapes.compare import _same_config
    from imc_grapes.config import LATER_FIELDS, identity_dict
    from imc_grapes.sweep import load_spec
    from imc_grapes.sweep.spec import config_id

    assert ("analog", "importance_offset_correction") in LATER_FIELDS
    cfg = TrainConfig()
    saved = cfg.to_dict()
    del saved["analog"]["importance_offset_correction"]        # as results.json files of earlier versions hold it
    assert identity_dict(cfg.to_dict()) == saved
    assert _same_config(saved, cfg)
    assert _same_config(saved, TrainConfig.from_dict(saved))
    corrected = cfg.replace(analog=dataclasses.replace(cfg.analog, importance_offset_correction=True))
    assert not _same_config(saved, corrected)
    assert identity_dict(corrected.to_dict())["analog"]["importance_offset_correction"] is True
    blob = json.dumps(saved, sort_keys=True, default=str, separators=(",", ":"))
    assert config_id(cfg) == hashlib.sha1(blob.encode()).hexdigest()[:12] != config_id(corrected)

    root = Path(__file__).resolve().parents[2] / "docs" / "results" / "importance-offset"
    with open(root / "summary.csv") as f:
        on_disk = {row["point"] for row in csv.DictReader(f)}
    assert {p.id for p in load_spec(root / "spec.toml").points()} == on_disk
