"""What each named experiment plans (against the paper's settings in grapes.md §6 and the issue), the options'
validation, and the paired differences of the report."""
import re

import pytest
import torch

from imc_grapes.compare import Cell
from imc_grapes.config import ConfigError, TrainConfig
from imc_grapes.experiments import EXPERIMENTS, ExperimentOptions, budget_for, paired, plan_experiment
from imc_grapes.train import RunResult


def _plan(name, **kw):
    return plan_experiment(name, ExperimentOptions(**kw))


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
@pytest.mark.parametrize("size", ["quick", "full"])
def test_every_group_has_the_control_a_grid_and_several_seeds(name, size):
    for g in _plan(name, size=size, backends=("digital", "crossbar")):
        assert g.spec.optimizers == ("sgd", "grapes", "layer-mean")
        assert len(g.spec.lr_grid) >= 3, g.key
        assert len(g.spec.seeds) >= 3, g.key
        assert 0 < g.spec.val_holdout
        assert g.spec.base.dataset in ("mnist", "fashion-mnist")


def test_mlp_plan_has_the_reference_net_and_bigger_variants():
    groups = _plan("mlp", size="quick")
    assert {g.spec.base.dataset for g in groups} == {"mnist", "fashion-mnist"}
    hidden = {g.spec.base.hidden for g in groups}
    assert (256, 256) in hidden
    assert any(len(h) >= 5 for h in hidden) and any(max(h) >= 1000 for h in hidden)
    assert all(g.spec.base.model == "mlp" and g.spec.base.rule == "bp" for g in groups)
    ref = next(g for g in groups if g.spec.base.hidden == (256, 256))
    assert ref.labels["network"] == "784-256-256-10" and ref.size == 784 * 256 + 256 * 256 + 256 * 10


def test_forgetting_plan_matches_the_paper():
    (g,) = _plan("forgetting", size="full")
    b = g.spec.base
    assert (b.hidden, b.momentum, b.batch_size, b.epochs, b.base_optimizer) == ((256, 256), 0.9, 64, 1, "sgd")
    assert b.extra["tasks"] == 5 and b.train_subset is None and b.dataset == "mnist"
    assert 0.001 in g.spec.lr_grid and g.trainer == "permuted" and g.tune_score == "final"
    (q,) = _plan("forgetting", size="quick")
    assert q.spec.base.epochs == 1 and q.spec.base.extra["tasks"] == 5


def test_forgetting_title_and_notes_name_the_settings_that_run():
    """The title and notes of ``forgetting`` say what the options run: at ``tiny`` 3 tasks of synthetic data on a
    784-16-16-10 net, batch 32, one untuned lr; ``--epochs`` changes the epochs per task; the full size keeps the
    paper's 5 tasks of MNIST (the listed title)."""
    e = EXPERIMENTS["forgetting"]
    tiny = ExperimentOptions(size="tiny")
    (g,) = plan_experiment("forgetting", tiny)
    assert (g.spec.base.extra["tasks"], g.spec.base.hidden, g.spec.base.batch_size) == (3, (16, 16), 32)
    title, notes = e.texts_for(tiny)
    assert title == "Catastrophic forgetting on permuted synthetic data (3 tasks, 1 epoch each)"
    assert notes.startswith("784-16-16-10 bias-free") and "batch 32, 1 epoch per task" in notes
    assert "One lr for every optimizer, 0.01 (no tuning" in notes and "256" not in notes and "tuned" not in notes
    assert "(5 tasks, 3 epochs each)" in e.texts_for(ExperimentOptions(size="quick", epochs=3))[0]
    full = ExperimentOptions()
    assert e.texts_for(full) == (e.title, e.notes)
    assert "784-256-256-10" in e.notes and "batch 64, 1 epoch per task" in e.notes and "in the digital grid" in e.notes


@pytest.mark.parametrize("name, full_data", [("mlp", "MNIST / Fashion-MNIST"), ("fa-dfa", None),
                                             ("cnn", "MNIST / Fashion-MNIST"), ("rnn", "MNIST"), ("snn", "MNIST")])
def test_titles_and_notes_name_the_data_and_batch_the_groups_use(name, full_data):
    """A report never names data or a batch its runs did not use: at ``tiny`` (synthetic data, batch 32) the title
    and notes say synthetic data and batch 32 (the MLP notes keep the reference code's 64 as a reference), with
    ``--datasets fashion-mnist`` Fashion-MNIST only; the full size keeps the listed title and notes."""
    e = EXPERIMENTS[name]
    tiny = ExperimentOptions(size="tiny")
    assert {g.spec.base.dataset for g in plan_experiment(name, tiny)} == {"synthetic"}
    mnist = re.compile(r"(?<![\w-])MNIST")       # the data set, not EMNIST or Fashion-MNIST
    text = " ".join(e.texts_for(tiny))
    assert not mnist.search(text) and "Fashion-MNIST" not in text
    assert ("synthetic data" in text) == (full_data is not None)        # fa-dfa names no data set
    if "batch 64" in e.notes:
        assert "batch 32 (the reference code: 64)" in text and "batch 64" not in text
    fashion = ExperimentOptions(size="quick", datasets=("fashion-mnist",))
    text = " ".join(e.texts_for(fashion))
    assert ("Fashion-MNIST" in text) == (full_data is not None) and not mnist.search(text)
    assert ("batch 64, as the reference code" in text) == ("batch 64" in e.notes)
    full = ExperimentOptions()
    assert e.texts_for(full) == (e.title, e.notes)
    assert full_data is None or full_data in e.title + e.notes


def test_fa_dfa_cnn_rnn_snn_plans():
    assert {g.spec.base.rule for g in _plan("fa-dfa", size="quick")} == {"fa", "dfa"}
    assert {g.spec.base.model for g in _plan("cnn", size="quick")} == {"cnn"}
    rnn = _plan("rnn", size="quick")
    assert {g.spec.base.extra["model"]["kind"] for g in rnn} == {"lstm", "rnn"}
    assert all(g.trainer == "custom" for g in rnn)
    snn = _plan("snn", size="quick")
    kinds = {(g.spec.base.extra["model"]["kind"], g.spec.base.extra["model"]["encoding"]) for g in snn}
    assert {("snu", "rate"), ("ssnu", "rate"), ("snu", "latency")} <= kinds


def test_analog_groups_are_separate_and_smaller():
    groups = _plan("mlp", size="quick", backends=("digital", "aihwkit"), preset="ReRamES")
    analog = [g for g in groups if g.hardware == "analog"]
    assert analog and all(g.spec.analog_backend == "aihwkit" and g.spec.base.analog.preset == "ReRamES" for g in analog)
    assert max(g.spec.base.train_subset for g in analog) < min(g.spec.base.train_subset for g in groups
                                                               if g.hardware == "digital")


def test_user_options_override_the_defaults():
    groups = _plan("cnn", size="quick", seeds=(7,), lr_grid=(0.5,), datasets=("fashion-mnist",), epochs=3)
    assert all(g.spec.seeds == (7,) and g.spec.lr_grid == (0.5,) and g.spec.base.epochs == 3 for g in groups)
    assert {g.spec.base.dataset for g in groups} == {"fashion-mnist"}
    assert all(g.spec.base.drop_last for g in groups)                      # the default drops the partial batch
    assert not any(g.spec.base.drop_last for g in _plan("forgetting", size="quick", drop_last=False))
    assert budget_for(ExperimentOptions(size="tiny"), "digital").train_subset == 256


@pytest.mark.parametrize("kw, message", [
    ({"size": "huge"}, "size must be one of tiny, quick, full"),
    ({"backends": ()}, "backends must be distinct entries"),
    ({"backends": ("digital", "digital")}, "backends must be distinct entries"),
    ({"seeds": ()}, "seeds must name at least one seed"),
    ({"seeds": (0, 0)}, r"seeds must name .* distinct integers"),            # the same run twice
    ({"seeds": (0, 1.5)}, r"seeds must name .* distinct integers"),
    ({"seeds": (True,)}, r"seeds must name .* distinct integers"),
    ({"seeds": (2 ** 64,)}, r"in \[-2\^63, 2\^64\)"),                       # beyond torch.manual_seed's range
    ({"epochs": 0}, "epochs must be an integer >= 1"),
    ({"epochs": 1.5}, "epochs must be an integer >= 1"),
    ({"lr_grid": ("0.1",)}, "lr_grid must be learning rates > 0"),
    ({"datasets": ("synthetic", "synthetic")}, "datasets must be one or more distinct entries"),   # groups twice
    ({"preset": "nope"}, "preset must be one of"),
    ({"preset": "PCM"}, r"preset 'PCM': only the analog backends .* but backends is digital only"),   # no-op
    ({"device_overrides": {"dw_min": 0.01}}, r"device_overrides \{'dw_min': 0.01\} \(--device-param\): only the "
                                             r"analog backends .* but backends is digital only"),   # no-op
    ({"backends": ("crossbar",), "preset": "GokmenVlasov", "device_overrides": {"up_down": 1.5}},
     r"ExperimentOptions.device_overrides: GokmenVlasovPresetDevice.up_down must be in \(-1, 1\), got 1.5"),
    ({"backends": ("crossbar",), "device_overrides": {"dwmin": 0.01}},
     r"ExperimentOptions.device_overrides: unknown device field\(s\) \['dwmin'\] for preset 'ReRamSB'"),
    ({"backends": ("crossbar",), "device_overrides": [("dw_min", 0.01)]}, "device_overrides must be a dict"),
])
def test_options_validation(kw, message):
    with pytest.raises(ConfigError, match=message):
        ExperimentOptions(**kw)
    with pytest.raises(ValueError, match="unknown experiment 'gan'"):
        plan_experiment("gan", ExperimentOptions())


def _cell(opt, accs):
    runs = [RunResult(TrainConfig(dataset="synthetic", seed=s), [{"epoch": 1, "test_acc": a}], "completed")
            for s, a in accs.items()]
    return Cell("digital", opt, 0.1, runs)


def test_paired_difference_by_hand():
    a = _cell("grapes", {0: 0.90, 1: 0.80, 2: 0.70, 3: 0.5})
    b = _cell("sgd", {0: 0.85, 1: 0.82, 2: 0.60})  # seed 3 missing: not paired
    p = paired(a, b)
    # d = (0.05, -0.02, 0.10): mean 0.0433…, std sqrt(((0.00667)² + (0.06333)² + (0.05667)²) / 2) = 0.0603
    assert p["n"] == 3 and p["positive"] == 2 and p["negative"] == 1
    assert p["mean"] == pytest.approx(0.13 / 3)
    assert p["std"] == pytest.approx(0.060277, abs=1e-6)
    assert paired(a, _cell("sgd", {9: 0.5})) is None


def test_findings_call_more_forgetting_worse_and_less_forgetting_better():
    """Forgetting is better lower: GRAPES forgetting 3 points more than SGD is worse, 3 points less is better."""
    from imc_grapes.experiments.report import _findings

    def comp(b, forgetting):
        diff = {"mean": 0.01, "std": 0.0, "n": 2, "positive": 2, "negative": 0}
        return {"group": "g", "a": "grapes", "b": b, "final_acc": diff, "curve_mean_acc": None,
                "forgetting": {"mean": forgetting, "std": 0.0, "n": 2, "positive": 0, "negative": 0}}

    more, less, same = _findings([], [comp("sgd", 0.03), comp("layer-mean", -0.03), comp("sgd", 0.0)])
    assert "forgetting +3.00 points (more forgetting than SGD: worse)" in more and "better" not in more
    assert "forgetting -3.00 points (less forgetting than the layer-mean control: better)" in less
    assert "worse" not in less and "(the same forgetting as SGD)" in same


@pytest.mark.parametrize("name", ["mlp", "fa-dfa"])
def test_mlp_notes_state_the_dropout_and_budget_that_differ_from_the_paper(name):
    """The report's notes of the MLP experiments say what the plans do against the paper's setting (grapes.md §6):
    dropout 0.1 (keep 0.9) only at the full size, fewer epochs and runs than the paper's 200 and 10."""
    notes = EXPERIMENTS[name].notes
    assert "dropout 10 %" in notes and "full size only" in notes and "200 epochs" in notes and "10 runs" in notes
    assert {g.spec.base.dropout for g in _plan(name, size="full", backends=("digital", "crossbar"))} == {0.1}
    assert {g.spec.base.dropout for g in _plan(name, size="quick", backends=("digital", "crossbar"))} == {0.0}
    full = _plan(name, size="full")
    assert max(g.spec.base.epochs for g in full) < 200 and max(len(g.spec.seeds) for g in full) < 10


def test_experiment_table_and_curves_use_the_completed_runs_and_show_no_std_for_one_seed(tmp_path, monkeypatch):
    """SGD completed seed 0 only (seed 1 diverged after one evaluation): its accuracy is seed 0's 70 % with no std
    (a single run has no seed-to-seed spread; it was shown as ± 0.00), GRAPES's (0.8, 0.9) is 85.00 ± 7.07
    (sample std 0.1/√2), the paired Δ is over seed 0 only (+10.00, n = 1), and SGD's curve is seed 0's three
    points (the diverged run's one evaluation cut it to one point)."""
    import matplotlib

    matplotlib.use("Agg")
    from imc_grapes.compare import CompareSpec, summarise_cells
    from imc_grapes.experiments import report as rep
    from imc_grapes.experiments.groups import Group, GroupResult

    def hist(accs):
        return [{"epoch": k + 1.0, "test_acc": a} for k, a in enumerate(accs)]

    base = TrainConfig(dataset="synthetic", hidden=(8,))
    s0, s1 = base.replace(seed=0), base.replace(seed=1)
    sgd = Cell("digital", "sgd", 0.1, [RunResult(s0, hist([0.5, 0.6, 0.7]), "completed"),
                                        RunResult(s1, hist([0.4]), "diverged")])
    gr = Cell("digital", "grapes", 0.1, [RunResult(s0, hist([0.6, 0.7, 0.8]), "completed"),
                                          RunResult(s1, hist([0.5, 0.6, 0.9]), "completed")])
    spec = CompareSpec(base=base, optimizers=("sgd", "grapes"), hardware=("digital",), seeds=(0, 1))
    res = GroupResult(Group("g", {}, spec), [sgd, gr], summarise_cells([sgd, gr], 0.9), tmp_path)
    rows = rep._summary_rows([res])
    assert (rows[0]["completed"], rows[1]["completed"]) == (1, 2)
    assert rows[1]["diff_vs_sgd_mean"] == pytest.approx(0.1) and rows[1]["diff_vs_sgd_n"] == 1
    table = rep._table(rows, [])
    assert "| sgd | 0.1 | 70.00 ± — (1/2 diverged) | 60.00 | (0/1 reached 90%) | — | — |" in table
    assert "| grapes | 0.1 | 85.00 ± 7.07 | 68.33 | (1/2 reached 90%) | +10.00 ± — (1/1) | — |" in table
    figures = {}
    monkeypatch.setattr(rep, "write_figure_atomic", lambda path, fig, **kw: figures.update({path.name: fig}))
    rep._plot_curves([rep.FigureGroup(res.group.key, res.group.trainer, res.cells)], tmp_path)
    sgd_line = figures["curves.png"].axes[0].get_lines()[0]
    assert list(sgd_line.get_ydata()) == pytest.approx([50.0, 60.0, 70.0])


def test_device_overrides_give_the_analog_groups_their_own_folders_and_reach_the_runs():
    """``device_overrides`` (``--device-param``) name the analog groups' folders with the preset and every field,
    sorted, at full precision (two devices never share a folder, the order given does not matter); the digital
    groups keep their folders and record no override; each analog run's config carries them to the tiles'
    device model."""
    from imc_grapes.backends import AnalogSettings
    from imc_grapes.backends.network import build_network

    kw = {"size": "tiny", "backends": ("digital", "crossbar"), "optimizers": ("sgd",)}

    def keys(**more):
        return [g.key for g in _plan("mlp", **kw, **more)]

    plain = keys()
    assert plain == ["synthetic-mlp16x1-digital", "synthetic-mlp16x3-digital", "synthetic-mlp16x1-crossbar"]
    assert keys(device_overrides={"up_down": 0.2, "dw_min": 0.008}) == keys(
        device_overrides={"dw_min": 0.008, "up_down": 0.2}) == [
        *plain[:2], "synthetic-mlp16x1-crossbar-ReRamSB-dw_min=0.008-up_down=0.2"]
    assert keys(preset="GokmenVlasov", device_overrides={"dw_min": 2, "dw_min_dtod_log_normal": True})[2] == \
        "synthetic-mlp16x1-crossbar-GokmenVlasov-dw_min=2.0-dw_min_dtod_log_normal=true"
    assert keys(device_overrides={"dw_min": 0.0080000001})[2] != keys(device_overrides={"dw_min": 0.008})[2]
    assert keys(preset="GokmenVlasov")[2] == "synthetic-mlp16x1-crossbar-GokmenVlasov"    # as before: no overrides
    # given through ``analog`` (the library's way before the option) the folders are named the same
    via_analog = ExperimentOptions(**kw, analog=AnalogSettings(device_overrides={"dw_min": 0.008}))
    assert via_analog.device_overrides == {"dw_min": 0.008}
    assert [g.key for g in plan_experiment("mlp", via_analog)][2] == "synthetic-mlp16x1-crossbar-ReRamSB-dw_min=0.008"
    with pytest.raises(ConfigError, match="device_overrides .* and analog.device_overrides .* differ"):
        ExperimentOptions(**kw, device_overrides={"dw_min": 0.01},
                          analog=AnalogSettings(device_overrides={"dw_min": 0.008}))

    groups = _plan("mlp", **kw, preset="GokmenVlasov",
                   device_overrides={"dw_min": 0.05, "up_down": 0.5, "dw_min_dtod": 0, "up_down_dtod": 0})
    analog = [g for g in groups if g.hardware == "analog"]
    assert len(analog) == 1 and analog[0].labels["hardware"] == \
        "crossbar GokmenVlasov (dw_min=0.05, up_down=0.5, dw_min_dtod=0, up_down_dtod=0)"
    spec = analog[0].spec
    cfg = spec.cell_config("analog", "sgd", spec.lr_grid[0], spec.seeds[0])
    assert cfg.backend == "crossbar" and cfg.analog.preset == "GokmenVlasov"
    assert cfg.to_dict()["analog"]["device_overrides"] == {"dw_min": 0.05, "up_down": 0.5, "dw_min_dtod": 0,
                                                           "up_down_dtod": 0}
    net = build_network(cfg, (1, 8, 8), 10, "cpu")
    for layer in net.analog_layers.values():
        tile = layer.inner.tile
        assert tile.config.device.dw_min == 0.05 and tile.config.device.dw_min_std == 0.3   # the rest: the preset's
        # no spread: every device steps dw_min·(1 + min(β, 0)) = 0.05 up, dw_min·(1 − max(β, 0)) = 0.025 down
        assert torch.equal(tile.params.dw_up, torch.full_like(tile.params.dw_up, 0.05))
        assert torch.equal(tile.params.dw_down, torch.full_like(tile.params.dw_down, 0.025))
    digital = groups[0].spec
    dcfg = digital.cell_config("digital", "sgd", digital.lr_grid[0], digital.seeds[0]).normalised()
    assert dcfg.analog.device_overrides == {} and dcfg.analog.preset == "ReRamSB"


def test_an_experiment_table_with_a_nan_accuracy_says_why(tmp_path):
    """A completed run whose final accuracy is NaN (its outputs were not finite) makes its cell's mean and std NaN
    (nan_propagates): the results table shows ``nan ± nan`` and, as a paragraph after the table (not a row of it),
    why; the curve-mean column leaves seed 0 out (its curve mean is NaN; a diagnostic's mean leaves it out), so it
    is seed 1's (0.6 + 0.7 + 0.8) / 3 = 70.00; neither run reached 90 %. A table without a NaN has no such
    paragraph."""
    from imc_grapes.compare import CompareSpec, summarise_cells
    from imc_grapes.experiments import report as rep
    from imc_grapes.experiments.groups import Group, GroupResult

    def hist(accs):
        return [{"epoch": k + 1.0, "test_acc": a} for k, a in enumerate(accs)]

    base = TrainConfig(dataset="synthetic", hidden=(8,))
    sgd = Cell("digital", "sgd", 0.1, [RunResult(base.replace(seed=0), hist([0.5, 0.6, float("nan")]), "completed"),
                                        RunResult(base.replace(seed=1), hist([0.6, 0.7, 0.8]), "completed")])
    spec = CompareSpec(base=base, optimizers=("sgd",), hardware=("digital",), seeds=(0, 1))
    res = GroupResult(Group("g", {}, spec), [sgd], summarise_cells([sgd], 0.9), tmp_path)
    lines = rep._table(rep._summary_rows([res]), []).split("\n")
    assert lines[2] == "| sgd | 0.1 | nan ± nan | 70.00 | (0/2 reached 90%) | — | — |"
    assert lines[3:] == ["", "nan: the model's outputs (logits) or weights were not finite (NaN/Inf) at that "
                             "evaluation, so it has no accuracy (e.g. outputs beyond the float32 range after drift); "
                             "a mean over runs is nan when one of its runs' is"]
    fine = Cell("digital", "sgd", 0.1, [RunResult(base.replace(seed=1), hist([0.6, 0.7, 0.8]), "completed")])
    res = GroupResult(Group("g", {}, spec), [fine], summarise_cells([fine], 0.9), tmp_path)
    assert "nan" not in rep._table(rep._summary_rows([res]), [])
