"""Long plot titles are wrapped to stay inside their figure (or their panel) in every report, not cut at its
edges: a run summary's suptitle (a deep MLP's layer list), compare's curves (a long hardware label, one of two
panels) and final-accuracy bars (one cell: a narrow figure), compare-summary's paired differences, and an
experiment report's per-group panels (long group keys) and bar charts."""
from __future__ import annotations

import matplotlib
import matplotlib.figure
import pytest

from imc_grapes.backends import AnalogSettings
from imc_grapes.compare import Cell, CompareSpec, plot_report
from imc_grapes.compare_summary import _plot as plot_paired
from imc_grapes.config import TrainConfig
from imc_grapes.experiments.groups import Group, GroupResult
from imc_grapes.experiments.report import _plot_accuracy, _plot_curves, _plot_gain, _plot_matrices
from imc_grapes.plotting import fit_title, title_chars
from imc_grapes.report import plot_curves
from imc_grapes.train import RunResult

matplotlib.use("Agg")

HISTORY = [{"epoch": 1, "test_acc": 0.4, "train_loss": 1.2}, {"epoch": 2, "test_acc": 0.6, "train_loss": 0.9}]


@pytest.fixture
def titles(monkeypatch):
    """Every title drawn when a figure is saved: ``(text, extent (x0, x1), figure width, its panel's width share,
    width of the text on one line)``, in pixels of the drawn figure."""
    seen: list[tuple[str, tuple[float, float], float, float, float]] = []
    save = matplotlib.figure.Figure.savefig

    def checked_save(fig, *args, **kwargs):
        fig.canvas.draw()
        panels = max(1, len(fig.axes))
        for text, share in [(fig._suptitle, 1.0)] + [(ax.title, 1.0 / panels) for ax in fig.axes]:
            if text is None or not text.get_text():
                continue
            box = text.get_window_extent()
            one_line = fig.text(0, 0, " ".join(text.get_text().split("\n")), fontsize=text.get_fontsize())
            width = one_line.get_window_extent().width
            one_line.remove()
            seen.append((text.get_text(), (box.x0, box.x1), fig.bbox.width, share, width))
        return save(fig, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", checked_save)
    return seen


def _check(titles, words: str, panels: int = 1, too_wide: bool = True) -> None:
    """The title holding ``words`` (once wrapped) was too wide for one line (unless ``too_wide`` is False: a fixed
    title that a wider figure may fit), is wrapped, keeps every character, and lies inside the figure and within
    its panel's share of the figure's width."""
    joined = "".join(words.split())
    found = [t for t in titles if "".join(t[0].split()) == joined]
    assert len(found) == 1, [t[0] for t in titles]
    text, (x0, x1), fig_width, share, one_line = found[0]
    assert one_line > share * fig_width or not too_wide     # on one line it would not fit its panel
    assert "\n" in text
    assert x0 >= 0.0 and x1 <= fig_width, text
    assert x1 - x0 <= fig_width / panels, text


def test_title_chars_divides_the_width_among_panels_and_checks_its_argument():
    fig = matplotlib.figure.Figure(figsize=(10, 4))
    assert title_chars(fig, "axes.titlesize", 2) == title_chars(fig, "axes.titlesize") // 2
    with pytest.raises(ValueError, match="columns must be >= 1"):
        title_chars(fig, "axes.titlesize", 0)
    assert fit_title(fig, "short") == "short"


def test_a_run_summarys_long_suptitle_is_wrapped(titles, tmp_path):
    cfg = TrainConfig(dataset="synthetic", hidden=(128,) * 24)
    plot_curves([RunResult(cfg, HISTORY, "completed")], tmp_path / "curves.png")
    _check(titles, f"synthetic · mlp {[128] * 24} · rule bp · base sgd · digital")


def test_a_run_summarys_title_names_the_hardware(titles, tmp_path):
    """The summary of `train --backend crossbar --preset EcRam` says so (it looked like a digital run's), and a
    CNN's title has no empty layer list."""
    cfg = TrainConfig(dataset="synthetic", model="cnn", backend="crossbar", analog=AnalogSettings(preset="EcRam"))
    plot_curves([RunResult(cfg, HISTORY, "completed")], tmp_path / "curves.png")
    assert "synthetic · cnn · rule bp · base sgd · crossbar EcRam" in [t[0] for t in titles]


def test_compares_long_panel_and_narrow_bar_chart_titles_are_wrapped(titles, tmp_path):
    cfg = TrainConfig(dataset="synthetic", hidden=(8,))
    long_hw = "analog on the crossbar backend with the ReRamSB preset, 9-bit ADC, 7-bit DAC and 256x256 tiles"
    cells = [Cell(hw, "sgd", 0.1, [RunResult(cfg, HISTORY, "completed")]) for hw in ("digital", long_hw)]
    rows = [{"hardware": "digital", "optimizer": "sgd", "final_test_acc_mean": 0.6, "final_test_acc_std": 0.01,
             "runs": 3, "completed": 3}]
    plot_report(cells, rows, tmp_path)
    _check(titles, long_hw, panels=2)                                  # curves.png: one of two panels
    _check(titles, "Final test accuracy (mean ± std over 3 seeds)")   # accuracy.png: one bar, a 3-inch figure


def test_compare_summarys_paired_difference_title_is_wrapped(titles):
    pair = {"mean": 0.01, "std": 0.005}
    png = plot_paired([{"report": "a", "label": "ReRamSB", "grapes-local-sgd": pair, "grapes-local-layer-mean": pair}],
                      "grapes-local", ("sgd", "layer-mean"))
    assert png[:4] == b"\x89PNG"
    _check(titles, "grapes-local against the others, paired by seed (mean ± std over seeds)")


def test_an_experiment_reports_group_keys_and_bar_chart_titles_are_wrapped(titles, tmp_path):
    """Two permuted-task groups with long keys: each group's panel in curves.png (one of two) and each cell's in
    matrix.png (one of four); the accuracy and gain bar charts' titles (a 6-inch figure; the accuracy of a run is
    the mean of its last 5 evaluations), which on one line nearly fill the figure, are wrapped too."""
    cfg = TrainConfig(dataset="synthetic", hidden=(8,))
    forgetting = {"matrix": [[0.9, 0.5], [0.0, 0.8]], "avg_acc": 0.65, "forgetting": 0.4, "bwt": -0.4}
    keys = [f"permuted-mnist-mlp784x256x256x10-analog-crossbar-ReRamSB-adc9-dac7-tile256x256-{t}-tasks"
            for t in ("five", "ten")]
    results = [GroupResult(Group(key, {"tasks": key}, CompareSpec(base=cfg, hardware=("analog",)), "permuted"),
                           [Cell("analog", opt, 0.1, [RunResult(cfg, HISTORY, "completed", extra={
                               "forgetting": forgetting})]) for opt in ("sgd", "grapes")], [], tmp_path / key)
               for key in keys]
    _plot_curves(results, tmp_path)
    for key in keys:
        _check(titles, key, panels=2)
    titles.clear()
    _plot_matrices(results, tmp_path)
    for key in keys:
        for opt in ("sgd", "grapes"):
            _check(titles, f"{opt} (lr 0.1)\n{key}", panels=4)
    titles.clear()
    rows = [{"group": key, "optimizer": opt, "final_test_acc_mean": 0.6, "final_test_acc_std": 0.01}
            for key in keys for opt in ("sgd", "grapes")]
    _plot_accuracy(rows, tmp_path, tail=5)
    _check(titles, "Test accuracy (mean of the last 5 evaluations), mean ± std over seeds", too_wide=False)
    comps = [{"group": key, "a": "grapes", "b": "sgd", "final_acc": {"mean": 0.01, "std": 0.005}} for key in keys]
    _plot_gain(comps, results, tmp_path, tail=5)
    _check(titles, "Difference to the reference optimizer (same seeds), mean ± std", too_wide=False)
