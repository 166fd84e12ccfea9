"""imc_grapes.report: summaries and learning-curve plots of several runs, including runs that all diverged."""
from __future__ import annotations

import csv
import json
import math
import warnings

import pytest

from imc_grapes.config import TrainConfig
from imc_grapes.report import format_table, plot_curves, write_summary
from imc_grapes.train import METRICS_COLUMNS, RunResult, write_metrics


def _diverged(opt: str) -> RunResult:
    return RunResult(TrainConfig(dataset="synthetic", optimizer=opt), [], "diverged", "loss became inf", None)


def _row(epoch: float, acc: float) -> dict:
    return {"epoch": epoch, "step": 1, "global_step": 1, "train_loss": 1.0 / (1 + epoch), "train_acc": acc,
            "test_loss": 1.0, "test_acc": acc, "time_s": 0.1, "elapsed_s": 0.1}


def test_all_diverged_runs_give_a_summary_and_a_plot_without_warnings(tmp_path):
    results = [_diverged("sgd"), _diverged("grapes")]
    with warnings.catch_warnings():
        warnings.simplefilter("error")       # e.g. matplotlib's "No artists with labels found to put in legend"
        rows = write_summary(results, tmp_path)
    assert [r["diverged"] for r in rows] == [1, 1]
    assert (tmp_path / "curves.png").stat().st_size > 0
    assert "diverged" in format_table(rows)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [r["status"] for r in summary["runs"]] == ["diverged", "diverged"]


def test_a_plot_with_finished_runs_still_has_its_legend(tmp_path):
    done = RunResult(TrainConfig(dataset="synthetic"), [_row(0.5, 0.3), _row(1.0, 0.6)], "completed", "", None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert plot_curves([done, _diverged("grapes")], tmp_path / "c.png").exists()


def test_metrics_csv_of_a_run_without_evaluations_has_the_header(tmp_path):
    path = write_metrics(tmp_path / "metrics.csv", [])
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        assert list(reader) == [] and tuple(reader.fieldnames or ()) == METRICS_COLUMNS
    path = write_metrics(tmp_path / "metrics.csv", [{**_row(1.0, 0.5), "M_mean/0": 0.9}])
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        assert len(list(reader)) == 1 and tuple(reader.fieldnames or ()) == (*METRICS_COLUMNS, "M_mean/0")


def test_the_curves_band_is_the_tables_sample_standard_deviation():
    """The shaded band of the learning curves is the sample standard deviation over the seeds (ddof = 1), as the
    tables' mean ± std (``statistics.stdev``); one seed: no spread."""
    import statistics

    import numpy as np

    from imc_grapes.report import seed_band

    vals = np.array([[0.5, 0.9], [0.7, 0.6], [0.6, 0.3]])
    mean, std = seed_band(vals)
    assert np.allclose(mean, [0.6, 0.6])
    assert np.allclose(std, [statistics.stdev([0.5, 0.7, 0.6]), statistics.stdev([0.9, 0.6, 0.3])])
    assert np.array_equal(seed_band(vals[:1])[1], [0.0, 0.0])


def test_an_interrupted_plot_leaves_the_previous_image_whole_and_no_temporary_file(tmp_path, monkeypatch):
    """A plot interrupted while its bytes are written (a crash, Ctrl-C, a full disk) must not replace the image a
    finished run wrote before with a truncated one: plots are written atomically like the CSV/JSON files."""
    import matplotlib.image

    done = RunResult(TrainConfig(dataset="synthetic"), [_row(0.5, 0.3), _row(1.0, 0.6)], "completed", "", None)
    path = plot_curves([done], tmp_path / "curves.png")
    before = path.read_bytes()
    assert before.startswith(b"\x89PNG")
    real_imsave = matplotlib.image.imsave

    def interrupted(fname, *args, **kw):        # writes part of the image where it is sent, then stops
        import io

        whole = io.BytesIO()
        real_imsave(whole, *args, **kw)
        if hasattr(fname, "write"):
            fname.write(whole.getvalue()[:100])
        else:
            with open(fname, "wb") as f:
                f.write(whole.getvalue()[:100])
        raise KeyboardInterrupt

    monkeypatch.setattr(matplotlib.image, "imsave", interrupted)
    with pytest.raises(KeyboardInterrupt):
        plot_curves([done], path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["curves.png"]


def test_a_table_grouped_by_a_tuple_or_none_valued_field_names_each_group():
    """summarise groups by any config field: the table prints a tuple (hidden) or None (train_subset: all)."""
    from imc_grapes.report import summarise

    runs = [RunResult(TrainConfig(dataset="synthetic", hidden=(8,)), [_row(1.0, 0.5)], "completed", "", None),
            RunResult(TrainConfig(dataset="synthetic", hidden=(16, 4)), [], "diverged", "loss became inf", None)]
    lines = format_table(summarise(runs, "hidden"), "hidden").splitlines()
    assert lines[2].split()[:4] == ["(8,)", "1", "50.00", "±"]
    assert lines[3].split() == ["(16,", "4)", "0/1", "diverged"]
    lines = format_table(summarise(runs, "train_subset"), "train_subset").splitlines()
    assert lines[2].split()[:2] == ["None", "1/2"]      # one of the two completed


def test_a_diverged_runs_partial_history_is_not_a_final_result(tmp_path):
    """Two completed runs (final 80 %, 90 %) and one that diverged after reaching 10 %: the group's final accuracy is
    85 ± 7.07 (the completed two: sample std of 80 and 90 is 7.071), the runs column says 2 of 3 completed, and the
    curves keep the completed runs' full length (the diverged run's one point would cut them to one)."""
    cfg = TrainConfig(dataset="synthetic")
    done = [RunResult(cfg, [_row(0.5, 0.5), _row(1.0, a)], "completed", "", None) for a in (0.8, 0.9)]
    partial = RunResult(cfg, [_row(0.5, 0.1)], "diverged", "loss became nan", None)
    rows = write_summary([*done, partial], tmp_path)
    assert rows[0]["runs"] == 3 and rows[0]["diverged"] == 1
    assert rows[0]["final_test_acc_mean"] == pytest.approx(0.85)
    assert rows[0]["final_test_acc_std"] == pytest.approx(0.0707107, rel=1e-5)
    assert rows[0]["best_test_acc_mean"] == pytest.approx(0.85)
    table = format_table(rows)
    assert " 2/3 " in table and "85.00 ± 7.07" in table and "the means are over the completed ones" in table

    import matplotlib.pyplot as plt

    captured = {}
    real_close = plt.close

    def keep(fig=None):
        captured["fig"] = fig
        real_close(fig)
    import unittest.mock as mock
    with mock.patch.object(plt, "close", keep):
        plot_curves([*done, partial], tmp_path / "c.png")
    lines = captured["fig"].axes[0].get_lines()
    assert [len(line.get_xdata()) for line in lines] == [2]


@pytest.mark.parametrize("nan_at", [0, 1, 2])
def test_best_accuracy_of_a_group_leaves_a_nan_evaluation_out_wherever_it_stands(nan_at):
    """A NaN evaluation is never a run's best (``max`` would return it when it stands first): runs with the
    accuracies 0.6, 0.8 and a NaN at ``nan_at`` (in place of one of three rows), and 0.9, 0.7 (finite), have the
    bests 0.8 and 0.9 -> mean 0.85 by hand; a run with no finite accuracy makes the mean NaN, as a NaN final does."""
    from imc_grapes.report import summarise

    cfg = TrainConfig(dataset="synthetic")
    accs = [0.6, 0.8]
    accs.insert(nan_at, float("nan"))
    runs = [RunResult(cfg, [_row(k + 1.0, a) for k, a in enumerate(accs)], "completed", "", None),
            RunResult(cfg, [_row(1.0, 0.9), _row(2.0, 0.7)], "completed", "", None)]
    row = summarise(runs)[0]
    assert row["best_test_acc_mean"] == pytest.approx(0.85)
    if nan_at == 2:     # a NaN final: the final mean and std are NaN (the std used to raise an AttributeError)
        assert math.isnan(row["final_test_acc_mean"]) and math.isnan(row["final_test_acc_std"])
    else:               # finals 0.8 and 0.7: mean 0.75, sample std 0.1/√2
        assert row["final_test_acc_mean"] == pytest.approx(0.75)
        assert row["final_test_acc_std"] == pytest.approx(0.1 / math.sqrt(2))
    no_finite = RunResult(cfg, [_row(1.0, float("nan")), _row(2.0, float("nan"))], "completed", "", None)
    row = summarise([*runs, no_finite])[0]
    assert math.isnan(row["best_test_acc_mean"]) and math.isnan(row["final_test_acc_std"]) and row["runs"] == 3
    assert "nan" in format_table([row])


def test_one_completed_run_with_a_nan_accuracy_gives_a_nan_mean_and_std():
    """The NaN policy of compare's summary (:func:`imc_grapes.stats.mean_std` with ``nan_propagates``, the one
    statistic both use): a group whose single completed run broke (NaN final and inference accuracy) has NaN as mean
    and std, not a std of 0 beside a NaN mean (as before the two shared it); a finite single run has std 0; the
    table shows no spread for one run either way."""
    from imc_grapes.report import summarise

    cfg = TrainConfig(dataset="synthetic")
    broken = RunResult(cfg, [_row(1.0, 0.5), _row(2.0, float("nan"))], "completed", "", None,
                       extra={"inference": {"3600": float("nan")}})
    row = summarise([broken])[0]
    assert math.isnan(row["final_test_acc_mean"]) and math.isnan(row["final_test_acc_std"])
    assert math.isnan(row["inference_acc@3600"]) and math.isnan(row["inference_acc_std@3600"])
    assert row["best_test_acc_mean"] == 0.5 and row["inference_n@3600"] == 1
    assert "nan ± —" in format_table([row])
    fine = RunResult(cfg, [_row(1.0, 0.5), _row(2.0, 0.625)], "completed", "", None,
                     extra={"inference": {"3600": 0.25}})
    row = summarise([fine])[0]
    assert (row["final_test_acc_mean"], row["final_test_acc_std"]) == (0.625, 0.0)
    assert (row["inference_acc@3600"], row["inference_acc_std@3600"]) == (0.25, 0.0)


def test_summary_and_table_show_the_accuracy_after_drift_at_each_time():
    """``train --inference-times``: the mean accuracy after drift per time over the completed runs (hand-computed;
    a diverged run's is left out), one column per time in ascending order with compare's labels, and none
    without inference results."""
    from imc_grapes.report import summarise

    def run(opt: str, seed: int, inference: dict[str, float], status: str = "completed") -> RunResult:
        r = RunResult(TrainConfig(dataset="synthetic", optimizer=opt, seed=seed), [_row(1.0, 0.8)], status, "", None)
        r.extra["inference"] = inference
        return r

    results = [run("sgd", 0, {"3600": 0.25, "1": 0.5}), run("sgd", 1, {"1": 0.7, "3600": 0.35}),
               run("sgd", 2, {"1": 0.0, "3600": 0.0}, status="diverged"),
               run("grapes", 0, {"1": 0.9, "3600": 0.875})]
    rows = summarise(results)
    assert [r["inference_acc@1"] for r in rows] == pytest.approx([0.6, 0.9])
    assert [r["inference_acc@3600"] for r in rows] == pytest.approx([0.3, 0.875])
    lines = format_table(rows).splitlines()
    assert lines[0].split()[-4:] == ["@1s", "(%)", "@1h", "(%)"]
    assert lines[2].split()[-2:] == ["60.00", "30.00"] and lines[3].split()[-2:] == ["90.00", "87.50"]
    assert "after PCM-like programming noise, drift and read noise" in lines[-1]
    plain = summarise([RunResult(TrainConfig(dataset="synthetic"), [_row(1.0, 0.8)], "completed", "", None)])
    assert not any(k.startswith("inference_acc@") for k in plain[0]) and "@" not in format_table(plain)


#: the line under a table that shows a NaN accuracy, written out here (not read from the code under test)
NAN_NOTE = ("nan: the model's outputs (logits) or weights were not finite (NaN/Inf) at that evaluation, so it has no "
            "accuracy (e.g. outputs beyond the float32 range after drift); a mean over runs is nan when one of its "
            "runs' is")


def test_a_model_with_a_nan_weight_has_a_nan_accuracy_and_the_table_says_why():
    """One NaN weight (row 1) makes every output of class 1 NaN (NaN·0 is NaN): argmax picks class 1 for every
    sample, and every label is 1, so argmax alone would score 1.0; the accuracy is NaN instead (train.evaluate), at
    every time after drift too (accuracy_after_drift evaluates nothing). The train table shows the mean over the
    two runs at those times as ``nan`` (one run's is NaN: nan_propagates), the finite mean (0.75 and 0.5: 62.50)
    as before, and as its last line why; a table without a NaN has no such line."""
    import torch
    from torch import nn

    from imc_grapes.data import Split
    from imc_grapes.inference_eval import accuracy_after_drift
    from imc_grapes.report import summarise
    from imc_grapes.train import evaluate

    from .test_inference_eval import digital_weights

    model = nn.Linear(4, 3, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(3, 4))
        model.weight[1, 3] = float("nan")
    split = Split(torch.eye(4), torch.ones(4, dtype=torch.long))
    assert (model(split.x).argmax(1) == split.y).all()      # what a plain argmax would score: 4 of 4
    loss, acc = evaluate(model, split)
    assert math.isnan(acc) and math.isnan(loss)
    read, write = digital_weights(model)
    drift = accuracy_after_drift(read, write, lambda: evaluate(model, split)[1], [3600.0, 1.0])
    assert list(drift) == ["1", "3600"] and all(math.isnan(a) for a in drift.values())
    cfg = TrainConfig(dataset="synthetic")
    broken = RunResult(cfg, [_row(1.0, 0.75)], "completed", "", None, extra={"inference": drift})
    fine = RunResult(cfg, [_row(1.0, 0.5)], "completed", "", None, extra={"inference": {"1": 0.5, "3600": 0.25}})
    lines = format_table(summarise([broken, fine])).splitlines()
    assert lines[2].split()[:4] == ["sgd", "2", "62.50", "±"] and lines[2].split()[-2:] == ["nan", "nan"]
    assert lines[-2].startswith("@t: mean test accuracy after PCM-like programming noise") and lines[-1] == NAN_NOTE
    assert "nan" not in format_table(summarise([fine]))
