"""A network too large for the device's memory is refused before anything is allocated, naming ``hidden``."""
import pytest
import torch

from imc_grapes import TrainConfig
from imc_grapes.capacity import BYTES_PER_WEIGHT, check_model_fits, memory_bytes
from imc_grapes.config import ConfigError
from imc_grapes.models import build_model, weight_count

GIB = 1 << 30


@pytest.mark.parametrize("name, hidden, bias", [("mlp", [100, 30], False), ("mlp", [7], True),
                                                ("cnn", [16, 32], False), ("cnn", [4, 8, 5], True)])
def test_weight_count_is_the_built_models(name, hidden, bias):
    model = build_model(name, input_shape=(1, 28, 28), n_classes=10, hidden=hidden, bias=bias, seed=0)
    assert weight_count(name, input_shape=(1, 28, 28), n_classes=10, hidden=hidden, bias=bias) == sum(
        p.numel() for p in model.parameters())


def test_weight_count_by_hand():
    # 784·1e11 + 1e11·10 weights: the width of the reported traceback
    assert weight_count("mlp", input_shape=(1, 28, 28), n_classes=10, hidden=[10 ** 11]) == 794 * 10 ** 11
    # conv 1→2 (3×3): 18, conv 2→4: 72, classifier 4·7·7·10 = 1960
    assert weight_count("cnn", input_shape=(1, 28, 28), n_classes=10, hidden=[2, 4]) == 18 + 72 + 1960


def test_memory_bytes_of_the_cpu_is_positive_and_at_most_the_machine():
    import os

    mem = memory_bytes("cpu")
    assert mem is not None and 0 < mem <= os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def test_a_network_beyond_memory_is_refused_and_a_4096_wide_one_is_not(monkeypatch):
    monkeypatch.setattr("imc_grapes.capacity.memory_bytes", lambda device: 16 * GIB)
    cfg = TrainConfig(hidden=(10 ** 11,))
    with pytest.raises(ConfigError, match=r"^TrainConfig\.hidden: the mlp 784-100000000000-10 has 7\.94e\+13 weights; "
                                          r".* 578 TiB, "
                                          r"more than the 16 GiB that cpu has on this machine \(at most 2\.15e\+09 "
                                          r"weights\): use smaller widths$"):
        check_model_fits(cfg, (1, 28, 28), 10, "cpu")
    check_model_fits(TrainConfig(hidden=(4096, 4096)), (1, 28, 28), 10, "cpu")    # 20 M weights, 160 MB
    # the bound itself: exactly the memory passes, one weight more does not
    width = 16 * GIB // BYTES_PER_WEIGHT // (784 + 10)
    check_model_fits(TrainConfig(hidden=(width,)), (1, 28, 28), 10, "cpu")
    n = 794 * width
    monkeypatch.setattr("imc_grapes.capacity.memory_bytes", lambda device: n * BYTES_PER_WEIGHT - 1)
    with pytest.raises(ConfigError, match=r"^TrainConfig\.hidden: "):
        check_model_fits(TrainConfig(hidden=(width,)), (1, 28, 28), 10, "cpu")
    with pytest.raises(ConfigError, match=r"\(3 copies\).*use smaller widths"):     # replicas trained together
        check_model_fits(TrainConfig(hidden=(width // 2,)), (1, 28, 28), 10, "cpu", copies=3)
    monkeypatch.setattr("imc_grapes.capacity.memory_bytes", lambda device: None)   # unknown memory: no refusal
    check_model_fits(TrainConfig(hidden=(10 ** 11,)), (1, 28, 28), 10, "cpu")


def test_build_network_refuses_before_allocating():
    from imc_grapes.backends import build_network

    with pytest.raises(ConfigError, match=r"^TrainConfig\.hidden: the cnn with channels"):
        build_network(TrainConfig(model="cnn", hidden=(10 ** 6, 10 ** 6)), (1, 28, 28), 10, torch.device("cpu"))


@pytest.mark.parametrize("command", ["train", "compare"])
def test_cli_hidden_too_large_is_a_usage_error(tmp_path, capsys, command):
    from imc_grapes.cli import main

    out = tmp_path / "out"
    assert main([command, "--dataset", "synthetic", "--hidden", "100000000000", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"imc-grapes {command}: error: --hidden: TrainConfig.hidden: the mlp 784-100000000000-10 "
                          "has 7.94e+13 weights")
    assert "Traceback" not in err and not out.exists()


@pytest.mark.parametrize("command", ["train", "compare"])
def test_cli_cnn_deeper_than_its_poolings_allow_is_a_usage_error(tmp_path, capsys, command):
    """``--model cnn --hidden 4 4 4 4 4`` ended in a ValueError traceback (exit 1) from SmallCNN once the run had
    started: 28 pixels halve 4 times to 1 (28 // 16), a fifth 2x2 pooling leaves none (28 // 32 = 0)."""
    from imc_grapes.cli import main

    out = tmp_path / "out"
    assert main([command, "--dataset", "synthetic", "--model", "cnn", "--hidden", "4", "4", "4", "4", "4",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == (f"imc-grapes {command}: error: --hidden: TrainConfig.hidden: the cnn pools its 28x28 inputs 2x2 "
                   f"once per conv block, so it takes at most 4 blocks (channel counts), got 5: [4, 4, 4, 4, 4]\n")
    assert not out.exists()
    check_model_fits(TrainConfig(model="cnn", hidden=(4, 4, 4, 4)), (1, 28, 28), 10, "cpu")    # 4 blocks: 1x1 left
    build_model("cnn", input_shape=(1, 28, 28), n_classes=10, hidden=[4, 4, 4, 4])
    with pytest.raises(ConfigError, match=r"^TrainConfig\.hidden: the cnn pools its 16x20 inputs 2x2 once per "
                                          r"conv block, so it takes at most 4 blocks"):
        check_model_fits(TrainConfig(model="cnn", hidden=(4,) * 5), (1, 16, 20), 10, "cpu")
