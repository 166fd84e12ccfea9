"""Long plot titles are wrapped to stay inside their figure (or their panel) in every report, not cut at its
edges: a run summary's suptitle (a deep MLP's layer list), compare's curves (a long hardware label, one of two
panels) and final-accuracy bars (one cell: a narrow figure), compare-summary's paired differences, and an
experiment report's per-group panels (long group keys) and bar charts."""
from __future__ import annotations

import math

import matplotlib
import matplotlib.colors as mcolors
import matplotlib.figure
import pytest

from imc_grapes.backends import AnalogSettings
from imc_grapes.compare import Cell, CompareSpec, plot_report
from imc_grapes.compare_summary import _plot as plot_paired
from imc_grapes.config import TrainConfig
from imc_grapes.experiments.groups import Group, GroupResult
from imc_grapes.experiments.report import FigureGroup, _plot_accuracy, _plot_curves, _plot_gain, _plot_matrices
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


def _figure_groups(results):
    """What the experiment report's curves and matrix figures draw of its groups (as write_experiment_report
    passes them)."""
    return [FigureGroup(r.group.key, r.group.trainer, r.cells) for r in results]


def test_an_experiment_reports_group_keys_and_bar_chart_titles_are_wrapped(titles, tmp_path):
    """Two permuted-task groups with long keys: each group's panel in curves.png (one of two) and each cell's in
    matrix.png (one of three a row); the accuracy and gain bar charts' titles (a 6-inch figure; the accuracy of a run is
    the mean of its last 5 evaluations), which on one line nearly fill the figure, are wrapped too."""
    cfg = TrainConfig(dataset="synthetic", hidden=(8,))
    forgetting = {"matrix": [[0.9, 0.5], [0.0, 0.8]], "avg_acc": 0.65, "forgetting": 0.4, "bwt": -0.4}
    keys = [f"permuted-mnist-mlp784x256x256x10-analog-crossbar-ReRamSB-adc9-dac7-tile256x256-{t}-tasks"
            for t in ("five", "ten")]
    results = [GroupResult(Group(key, {"tasks": key}, CompareSpec(base=cfg, hardware=("analog",)), "permuted"),
                           [Cell("analog", opt, 0.1, [RunResult(cfg, HISTORY, "completed", extra={
                               "forgetting": forgetting})]) for opt in ("sgd", "grapes")], [], tmp_path / key)
               for key in keys]
    _plot_curves(_figure_groups(results), tmp_path)
    for key in keys:
        _check(titles, key, panels=2)
    titles.clear()
    _plot_matrices(_figure_groups(results), tmp_path)
    for key in keys:
        for opt in ("sgd", "grapes"):
            _check(titles, f"{opt} (lr 0.1, n=1)\n{key}", panels=3)
    titles.clear()
    rows = [{"group": key, "optimizer": opt, "final_test_acc_mean": 0.6, "final_test_acc_std": 0.01, "runs": 3,
             "completed": 3} for key in keys for opt in ("sgd", "grapes")]
    _plot_accuracy(rows, tmp_path, tail=5)
    _check(titles, "Test accuracy (mean of the last 5 evaluations), mean ± std over 3 seeds", too_wide=False)
    comps = [{"group": key, "a": "grapes", "b": "sgd", "final_acc": {"mean": 0.01, "std": 0.005, "n": 3}}
             for key in keys]
    _plot_gain(comps, keys, tmp_path, tail=5)
    _check(titles, "Difference to the reference optimizer (same seeds), mean ± std", too_wide=False)


# --- colours, accuracy ranges and what a figure says about its runs (audit of every report's figures) ---------


def _axes_with_lines(ylim_data):
    fig = matplotlib.figure.Figure()
    ax = fig.add_subplot()
    for ys in ylim_data:
        ax.plot([1, 2, 3], ys)
    return ax


def test_a_narrow_accuracy_range_is_widened_to_ten_points_inside_0_to_100():
    """Curves stuck at chance (9.7–9.9 %) filled the whole height and read as a race; the range is now at least
    MIN_ACC_SPAN = 10 points around its middle, shifted to stay inside 0–100 %, and a wide range is kept."""
    from imc_grapes.plotting import MIN_ACC_SPAN, accuracy_ylim

    assert MIN_ACC_SPAN == 10.0
    ax = _axes_with_lines([[9.7, 9.8, 9.9]])
    lo, hi = ax.get_ylim()
    assert accuracy_ylim(ax) == pytest.approx(((lo + hi) / 2 - 5, (lo + hi) / 2 + 5))
    assert ax.get_ylim() == pytest.approx(((lo + hi) / 2 - 5, (lo + hi) / 2 + 5))
    assert ax.get_ylim()[0] < 9.7 - 4 and ax.get_ylim()[1] > 9.9 + 4
    near_top = _axes_with_lines([[99.5, 99.8, 99.9]])
    assert accuracy_ylim(near_top) == pytest.approx((90.0, 100.0))     # shifted down to end at 100 %
    near_zero = _axes_with_lines([[0.0, 0.5, 1.0]])
    assert accuracy_ylim(near_zero) == pytest.approx((0.0, 10.0))      # shifted up to start at 0 %
    wide = _axes_with_lines([[40.0, 60.0, 80.0]])
    before = wide.get_ylim()
    assert accuracy_ylim(wide) == pytest.approx(before) and wide.get_ylim() == pytest.approx(before)
    empty = matplotlib.figure.Figure().add_subplot()
    assert accuracy_ylim(empty) == (0.0, 100.0)


def test_each_optimizer_has_one_colour_and_other_names_get_the_remaining_ones():
    from imc_grapes.plotting import OPTIMIZER_COLORS, optimizer_color

    assert [optimizer_color(o) for o in ("sgd", "grapes", "layer-mean", "grapes-local")] == [
        "tab:blue", "tab:orange", "tab:green", "tab:red"]
    others = {optimizer_color(v, i) for i, v in enumerate(("a", 0.1, None, ("x",), "b", "c"))}
    assert len(others) == 6 and not others & set(OPTIMIZER_COLORS.values())


def _figures(monkeypatch, module):
    figures: dict[str, matplotlib.figure.Figure] = {}
    monkeypatch.setattr(module, "write_figure_atomic", lambda path, fig, **kw: figures.update({path.name: fig}))
    return figures


def _compare_job(chance: bool = False):
    """Digital and analog (crossbar EcRam) cells of SGD and GRAPES, two seeds each; with ``chance`` the analog
    runs stay at 9.7–9.9 % (a device on which nothing trains)."""
    from imc_grapes.compare import summarise_cells

    base = TrainConfig(dataset="synthetic", hidden=(8,))
    cells = []
    for hw in ("digital", "analog"):
        cfg = base if hw == "digital" else base.replace(backend="crossbar", analog=AnalogSettings(preset="EcRam"))
        for opt, accs in (("sgd", (0.5, 0.7)), ("grapes", (0.6, 0.8))):
            if hw == "analog" and chance:
                accs = (0.097, 0.099)
            runs = [RunResult(cfg.replace(seed=s, optimizer=opt),
                              [{"epoch": 1.0, "test_acc": accs[0] + s / 1000, "train_loss": 1.0},
                               {"epoch": 2.0, "test_acc": accs[1] - s / 1000, "train_loss": 0.5}], "completed",
                              extra={"inference": {"1": accs[1], "3600": accs[0]}} if hw == "analog" else {})
                    for s in (0, 1)]
            cells.append(Cell(hw, opt, 0.1, runs))
    return cells, summarise_cells(cells, 0.9)


def test_compare_figures_colour_each_optimizer_alike_and_say_what_they_show(monkeypatch, tmp_path):
    """SGD is blue and GRAPES orange in curves.png, accuracy.png and inference.png (the bars were coloured by
    hardware: the analog bars orange, GRAPES's colour in the curves); the analog panel names its backend and
    device preset and the figure its data set, model and what the band is; the bars start at 0 % (a bar zoomed to
    60–100 % drew 72 % as a third of 97 %); legends say on how many runs each line rests."""
    import imc_grapes.compare as compare_mod

    figures = _figures(monkeypatch, compare_mod)
    cells, rows = _compare_job()
    plot_report(cells, rows, tmp_path)
    curves = figures["curves.png"]
    for ax in curves.axes:
        assert [mcolors.to_hex(line.get_color()) for line in ax.get_lines()] == [mcolors.to_hex("tab:blue"),
                                                                               mcolors.to_hex("tab:orange")]
        assert [t.get_text() for t in ax.get_legend().get_texts()] == ["sgd (lr 0.1, n=2)", "grapes (lr 0.1, n=2)"]
        assert (ax.get_xlabel(), ax.get_ylabel()) == ("epoch", "test accuracy (%)")
    assert [ax.get_title() for ax in curves.axes] == ["digital", "analog: crossbar EcRam"]
    assert curves._suptitle.get_text() == "Test accuracy, mean ± std over completed runs · synthetic · mlp [8]"
    bars = figures["accuracy.png"].axes[0]
    assert [mcolors.to_hex(p.get_facecolor()) for p in bars.patches] == [
        mcolors.to_hex(c) for c in ("tab:blue", "tab:orange") * 2]
    assert bars.get_ylim()[0] == 0.0 and bars.get_ylim()[1] >= 100.0
    assert bars.get_ylabel() == "final test accuracy (%)"
    inference = figures["inference.png"].axes[0]
    assert [mcolors.to_hex(line.get_color()) for line in inference.get_lines()] == [
        mcolors.to_hex("tab:blue"), mcolors.to_hex("tab:orange")]
    assert [t.get_text() for t in inference.get_legend().get_texts()] == ["analog sgd (n=2)", "analog grapes (n=2)"]
    assert inference.get_xscale() == "log" and inference.get_xlabel() == "time after programming (s)"
    assert "crossbar EcRam" in inference.get_title()


def test_compare_curves_at_chance_are_not_magnified(monkeypatch, tmp_path):
    """Analog runs that stay at 9.7–9.9 % share the y axis with the digital ones (50–80 %) and, alone, get a range
    of at least ten points: flat lines, not a race decided by 0.1 points."""
    import imc_grapes.compare as compare_mod

    figures = _figures(monkeypatch, compare_mod)
    cells, rows = _compare_job(chance=True)
    plot_report([c for c in cells if c.hardware == "analog"], rows[2:], tmp_path)
    lo, hi = figures["curves.png"].axes[0].get_ylim()
    assert hi - lo >= 10.0 and lo <= 9.7 and hi >= 9.9


def test_a_run_summarys_curves_use_the_optimizer_colours_and_name_their_band_and_loss(monkeypatch, tmp_path):
    """`train`'s curves.png: SGD blue and GRAPES orange in both panels (matplotlib's cycle gave them by order),
    the titles say the band is ± std over runs, the loss axis names its quantity, and curves within a point of
    each other get a ten-point accuracy range."""
    import imc_grapes.report as report_mod

    figures = _figures(monkeypatch, report_mod)
    cfg = TrainConfig(dataset="synthetic", hidden=(8,))
    hist = [{"epoch": 1, "test_acc": 0.40, "train_loss": 1.2}, {"epoch": 2, "test_acc": 0.405, "train_loss": 0.9}]
    results = [RunResult(cfg.replace(optimizer=opt, seed=s), hist, "completed") for opt in ("grapes", "sgd")
               for s in (0, 1)]
    plot_curves(results, tmp_path / "curves.png")
    acc, loss = figures["curves.png"].axes
    for ax in (acc, loss):
        assert [mcolors.to_hex(line.get_color()) for line in ax.get_lines()] == [mcolors.to_hex("tab:orange"),
                                                                               mcolors.to_hex("tab:blue")]
        assert [t.get_text() for t in ax.get_legend().get_texts()] == ["grapes (n=2)", "sgd (n=2)"]
    assert acc.get_title() == "Test accuracy (mean ± std over runs)" and acc.get_ylabel() == "test accuracy (%)"
    assert loss.get_ylabel() == "train loss (cross-entropy, nats)" and loss.get_yscale() == "log"
    assert acc.get_ylim()[1] - acc.get_ylim()[0] >= 10.0


def _experiment_groups(tmp_path, seeds=(0, 1), forgetting=True):
    """One permuted-task group (digital) with SGD, GRAPES and a layer-mean cell whose only run diverged."""
    cfg = TrainConfig(dataset="synthetic", hidden=(8,))
    fg = {"matrix": [[0.9, 0.5], [0.0, 0.3]], "avg_acc": 0.4, "forgetting": 0.4, "bwt": -0.4}
    hist = [{"epoch": 1.0, "test_acc": 0.6, "train_loss": 1.0}, {"epoch": 2.0, "test_acc": 0.4, "train_loss": 0.9}]
    cells = [Cell("digital", opt, 0.1, [RunResult(cfg.replace(seed=s, optimizer=opt), hist, "completed",
                                                  extra={"forgetting": fg} if forgetting else {}) for s in seeds])
             for opt in ("sgd", "grapes")]
    cells.append(Cell("digital", "layer-mean", 0.1, [RunResult(cfg.replace(seed=0), hist[:1], "diverged")]))
    group = Group("synthetic-permuted2", {}, CompareSpec(base=cfg, hardware=("digital",)), "permuted")
    return [GroupResult(group, cells, [], tmp_path)]


def test_experiment_accuracy_bars_start_at_zero_in_optimizer_colours_and_mark_a_cell_without_a_run(monkeypatch,
                                                                                                      tmp_path):
    """accuracy.png started its bars at (lowest − 5) %, had matplotlib's colours by order, drew zero-width error
    bars for one seed under a title claiming a std, and left out a cell whose runs all diverged without a word."""
    import imc_grapes.experiments.report as rep

    figures = _figures(monkeypatch, rep)
    rows = [{"group": "g", "optimizer": "grapes", "final_test_acc_mean": 0.9, "final_test_acc_std": 0.02, "runs": 2,
             "completed": 2},
            {"group": "g", "optimizer": "sgd", "final_test_acc_mean": 0.8, "final_test_acc_std": 0.0, "runs": 2,
             "completed": 1},
            {"group": "g", "optimizer": "layer-mean", "final_test_acc_mean": None, "final_test_acc_std": None,
             "runs": 2, "completed": 0}]
    rep._plot_accuracy(rows, tmp_path)
    ax = figures["accuracy.png"].axes[0]
    assert ax.get_ylim()[0] == 0.0 and ax.get_ylim()[1] >= 100.0
    assert [mcolors.to_hex(p.get_facecolor()) for p in ax.patches] == [mcolors.to_hex("tab:orange"),
                                                                     mcolors.to_hex("tab:blue")]
    assert [p.get_height() for p in ax.patches] == pytest.approx([90.0, 80.0])
    (bars,) = [c for c in ax.collections if len(c.get_segments()) == 1]      # one error bar: GRAPES's ± 2 points
    ((x, y0), (_, y1)), = bars.get_segments()
    assert (y0, y1) == pytest.approx((88.0, 92.0)) and x == pytest.approx(ax.patches[0].get_x() + 0.8 / 6)
    assert [t.get_text() for t in ax.texts] == ["no completed run"]
    assert ax.get_title() == "Final test accuracy, mean ± std over 2 seeds"
    rep._plot_accuracy([dict(rows[0], runs=1, completed=1, final_test_acc_std=0.0)], tmp_path)
    one = figures["accuracy.png"].axes[0]
    assert one.get_title() == "Final test accuracy, one seed" and not one.collections


def test_experiment_curves_use_the_optimizer_colours_count_tasks_and_name_a_diverged_cell(monkeypatch, tmp_path):
    import imc_grapes.experiments.report as rep

    figures = _figures(monkeypatch, rep)
    rep._plot_curves(_figure_groups(_experiment_groups(tmp_path)), tmp_path)
    ax = figures["curves.png"].axes[0]
    assert [mcolors.to_hex(line.get_color()) for line in ax.get_lines() if len(line.get_xdata())] == [
        mcolors.to_hex("tab:blue"), mcolors.to_hex("tab:orange")]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "sgd (lr 0.1, n=2)", "grapes (lr 0.1, n=2)", "layer-mean (lr 0.1): no completed run of 1"]
    assert ax.get_xlabel() == "tasks trained"
    figures["curves.png"].canvas.draw()
    assert all(float(t).is_integer() for t in ax.get_xticks())         # a count of tasks: no tick at 1.25
    assert "mean ± std over completed runs" in " ".join(figures["curves.png"]._suptitle.get_text().split())


def test_forgetting_matrix_has_a_colour_bar_readable_numbers_and_the_bars_name_their_axis(monkeypatch, tmp_path):
    """matrix.png had no colour scale and white numbers on viridis's light yellow-green; forgetting.png had no y
    labels, one colour for every optimizer and zero-width error bars for one seed."""
    import imc_grapes.experiments.report as rep

    figures = _figures(monkeypatch, rep)
    rep._plot_matrices(_figure_groups(_experiment_groups(tmp_path)), tmp_path)
    fig = figures["matrix.png"]
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 2 and len(fig.axes) == 3                       # two cells and their colour bar
    (bar,) = [ax for ax in fig.axes if not ax.images]
    assert bar.get_ylabel() == "test accuracy on the task (%)" and bar.get_ylim() == pytest.approx((0.0, 100.0))
    # 90 % (light) in black, 50 % and 30 % (dark) in white; the untrained entry (task 1 before training it) blank
    assert [(t.get_text(), t.get_color()) for t in panels[0].texts] == [("90", "black"), ("50", "white"),
                                                                         ("30", "white")]
    assert panels[0].get_title().startswith("sgd (lr 0.1, n=2)")
    assert "mean over completed runs" in " ".join(fig._suptitle.get_text().split())
    avg, forget = figures["forgetting.png"].axes
    assert (avg.get_ylabel(), forget.get_ylabel()) == ("average accuracy over tasks (%)", "forgetting (points)")
    assert [mcolors.to_hex(p.get_facecolor()) for p in avg.patches] == [mcolors.to_hex("tab:blue"),
                                                                      mcolors.to_hex("tab:orange")]
    assert avg.get_ylim() == (0.0, 100.0)
    assert "mean ± std over 2 seeds" in " ".join(figures["forgetting.png"]._suptitle.get_text().split())
    rep._plot_matrices(_figure_groups(_experiment_groups(tmp_path, seeds=(0,))), tmp_path)
    avg, forget = figures["forgetting.png"].axes
    assert not avg.collections and not forget.collections                # one seed: no error bar
    assert "one seed" in figures["forgetting.png"]._suptitle.get_text()


def test_compare_summarys_paired_bars_take_the_compared_optimizers_colour_and_no_bar_for_one_seed(monkeypatch):
    """paired.png drew "grapes − layer-mean" in orange (GRAPES's colour in every other figure) and a zero-width
    error bar on a difference over one seed; now each difference has the colour of the optimizer GRAPES is compared
    with (SGD blue, layer-mean green) and only a difference over two or more seeds gets an error bar."""
    saved: list[matplotlib.figure.Figure] = []
    save = matplotlib.figure.Figure.savefig
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig",
                        lambda fig, *a, **k: (saved.append(fig), save(fig, *a, **k)))
    rows = [{"report": "a", "label": "digital", "grapes-sgd": {"mean": 0.01, "std": 0.005, "n": 3},
             "grapes-layer-mean": {"mean": -0.02, "std": 0.0, "n": 1}}]
    plot_paired(rows, "grapes", ("sgd", "layer-mean"))
    (ax,) = saved[0].axes
    assert [mcolors.to_hex(p.get_facecolor()) for p in ax.patches] == [mcolors.to_hex("tab:blue"),
                                                                     mcolors.to_hex("tab:green")]
    assert [p.get_height() for p in ax.patches] == pytest.approx([1.0, -2.0])
    (bars,) = [c for c in ax.collections if len(c.get_segments()) == 1]      # one error bar: grapes − sgd's
    ((_, y0), (_, y1)), = bars.get_segments()
    assert (y0, y1) == pytest.approx((0.5, 1.5))
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["grapes − sgd", "grapes − layer-mean"]


def test_experiment_gain_bars_of_optimizer_pairs_take_no_single_optimizers_colour(monkeypatch, tmp_path):
    """gain.png drew "grapes − sgd" in blue (SGD's colour) and "layer-mean − sgd" in orange (GRAPES's); a pair
    now has a colour no optimizer has, and a difference over one seed no error bar."""
    import imc_grapes.experiments.report as rep
    from imc_grapes.plotting import OPTIMIZER_COLORS

    figures = _figures(monkeypatch, rep)
    results = _experiment_groups(tmp_path)
    key = results[0].group.key
    comps = [{"group": key, "a": "grapes", "b": "sgd", "final_acc": {"mean": 0.01, "std": 0.005, "n": 2}},
             {"group": key, "a": "layer-mean", "b": "sgd", "final_acc": {"mean": -0.01, "std": 0.0, "n": 1}}]
    rep._plot_gain(comps, [r.group.key for r in results], tmp_path)
    ax = figures["gain.png"].axes[0]
    colours = [mcolors.to_hex(p.get_facecolor()) for p in ax.patches]
    assert len(set(colours)) == 2 and not set(colours) & {mcolors.to_hex(c) for c in OPTIMIZER_COLORS.values()}
    assert len([c for c in ax.collections if len(c.get_segments()) == 1]) == 1     # grapes − sgd's only
    assert ax.get_title().endswith("mean ± std")


def test_a_run_summary_names_an_optimizer_whose_every_run_diverged(monkeypatch, tmp_path):
    """GRAPES diverged on both seeds: its curve cannot be drawn, and it was left out of curves.png without a word;
    both panels' legends now say so, next to SGD's line."""
    import imc_grapes.report as report_mod

    figures = _figures(monkeypatch, report_mod)
    cfg = TrainConfig(dataset="synthetic", hidden=(8,))
    results = [RunResult(cfg.replace(optimizer="sgd", seed=0), HISTORY, "completed")] + [
        RunResult(cfg.replace(optimizer="grapes", seed=s), HISTORY[:1], "diverged") for s in (0, 1)]
    plot_curves(results, tmp_path / "curves.png")
    for ax in figures["curves.png"].axes:
        assert [t.get_text() for t in ax.get_legend().get_texts()] == ["sgd (n=1)", "grapes: no completed run of 2"]
        assert [len(line.get_xdata()) for line in ax.get_lines()] == [2, 0]
        assert mcolors.to_hex(ax.get_lines()[1].get_color()) == mcolors.to_hex("tab:orange")


def test_overlapping_series_are_grouped_and_moved_apart_by_a_share_of_the_value_spacing():
    """Series with the same x values and y values within the tolerance form a group (each joins the first earlier
    group it overlaps); the k-th of g is moved by (k − (g − 1)/2) × 0.08 of the smallest gap between the axis's
    values — on a linear axis in data units, on a log axis in decades; a series that overlaps none keeps its x."""
    import matplotlib.pyplot as plt

    from imc_grapes.plotting import dodged_x, interleaved_dashes, overlap_groups, overlap_tolerance

    a, b = ([1.0, 2.0], [5.0, 6.0]), ([1.0, 2.0], [5.0005, 6.0])
    far, other_x = ([1.0, 2.0], [5.0, 7.0]), ([1.0, 3.0], [5.0, 6.0])
    assert overlap_tolerance([5.0, 6.0, 7.0, float("nan")]) == pytest.approx(0.01) and overlap_tolerance([]) == 0
    assert overlap_groups([a, far, b, other_x, a], 0.001) == [(0, 3), (0, 1), (1, 3), (0, 1), (2, 3)]
    assert overlap_groups([a, b], 0.0) == [(0, 1), (0, 1)]           # no tolerance: only equal values overlap
    fig, ax = plt.subplots()
    values = [1.0, 2.0, 4.0]                                          # linear: the smallest gap is 1
    assert dodged_x(ax, [1.0, 4.0], 0, 1, values) == [1.0, 4.0]
    assert dodged_x(ax, [1.0, 4.0], 0, 2, values) == pytest.approx([0.96, 3.96])
    assert dodged_x(ax, [1.0, 4.0], 2, 3, values) == pytest.approx([1.08, 4.08])
    assert dodged_x(ax, [1.0], 5, 6, values) == pytest.approx([1.0 + 2.5 * 0.08])   # 6: 0.4 / 5 = 0.08 a step
    assert dodged_x(ax, [1.0], 10, 11, values) == pytest.approx([1.0 + 5 * 0.04])   # 11: 0.4 / 10 = 0.04 a step
    ax.set_xscale("log")
    values = [1e-3, 1e-2, 1e-1]                                       # log: one decade between neighbours
    assert dodged_x(ax, [1e-3, 1e-1], 1, 2, values) == pytest.approx([1e-3 * 10 ** 0.04, 1e-1 * 10 ** 0.04])
    assert dodged_x(ax, [3.0], 1, 2, [3.0]) == pytest.approx([3.0 * 10 ** (0.08 * 0.5 * math.log10(3.0))])
    plt.close(fig)
    assert interleaved_dashes(0, 2) == (0.0, (4.0, 4.0)) and interleaved_dashes(2, 3) == (8.0, (4.0, 8.0))


def test_compare_accuracy_bars_hatch_the_analog_cells_and_say_so_below_the_axes(monkeypatch, tmp_path):
    """Digital and analog bars differed only by their tick labels: analog bars are hatched, digital ones plain, and
    a legend below the axes (covering no bar) names both kinds, the analog one by its backend and device preset."""
    import imc_grapes.compare as compare_mod

    figures = _figures(monkeypatch, compare_mod)
    cells, rows = _compare_job()
    plot_report(cells, rows, tmp_path)
    fig = figures["accuracy.png"]
    ax = fig.axes[0]
    assert [p.get_hatch() or "" for p in ax.patches] == ["", "", "//", "//"]     # digital sgd, grapes; analog
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["ideal digital", "analog: crossbar EcRam"]
    assert [p.get_hatch() or "" for p in legend.get_patches()] == ["", "//"]
    fig.canvas.draw()
    box, axes_box = legend.get_window_extent(), ax.get_window_extent()
    assert box.y1 <= axes_box.y0 and box.y0 >= 0                                 # below the axes, in the figure
    plot_report([c for c in cells if c.hardware == "digital"], rows[:2], tmp_path)
    ax = figures["accuracy.png"].axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["ideal digital"]


def test_inference_rows_carry_the_spread_over_seeds_and_the_figure_draws_it_as_a_band(monkeypatch, tmp_path):
    """inference.png showed only the mean at each time after programming. The summary rows now carry the sample
    std over the completed runs and their number at each time (a NaN accuracy left out of both), and the figure
    draws a band of ± that std around each mean; a cell of one run has no band."""
    import imc_grapes.compare as compare_mod
    from imc_grapes.compare import summarise_cells

    cfg = TrainConfig(dataset="synthetic", hidden=(8,), backend="crossbar")
    hist = [{"epoch": 1.0, "test_acc": 0.8, "train_loss": 0.5}]
    # seed 1 was not evaluated at 3600 s (None: not measured, left out; a NaN would make the mean NaN, see below)
    sgd = [RunResult(cfg.replace(seed=s), hist, "completed",
                     extra={"inference": {k: v for k, v in (("1", a1), ("3600", a2)) if v is not None}})
           for s, (a1, a2) in enumerate([(0.7, 0.5), (0.8, None), (0.9, 0.6)])]
    grapes = [RunResult(cfg.replace(optimizer="grapes"), hist, "completed", extra={"inference": {"1": 0.75,
                                                                                                 "3600": 0.65}})]
    cells = [Cell("analog", "sgd", 0.1, sgd), Cell("analog", "grapes", 0.1, grapes)]
    rows = summarise_cells(cells, 0.9)
    assert rows[0]["inference_acc@1"] == pytest.approx(0.8) and rows[0]["inference_acc_std@1"] == pytest.approx(0.1)
    assert rows[0]["inference_n@1"] == 3 and rows[0]["inference_n@3600"] == 2
    assert rows[0]["inference_acc@3600"] == pytest.approx(0.55)
    assert rows[0]["inference_acc_std@3600"] == pytest.approx(0.1 / math.sqrt(2))     # |0.6 − 0.5| / √2
    assert (rows[1]["inference_acc_std@1"], rows[1]["inference_n@1"]) == (0.0, 1)
    figures = _figures(monkeypatch, compare_mod)
    plot_report(cells, rows, tmp_path)
    ax = figures["inference.png"].axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["analog sgd (n=2–3)", "analog grapes (n=1)"]
    band = ax.collections[0].get_paths()[0].vertices
    at = {t: sorted({round(float(y), 6) for x, y in band if x == t}) for t in (1.0, 3600.0)}
    assert at == {1.0: [70.0, 90.0], 3600.0: pytest.approx([55 - 10 / math.sqrt(2), 55 + 10 / math.sqrt(2)])}
    assert all(len(p.vertices) == 0 for p in ax.collections[1].get_paths())     # one run: no band
    assert "mean ± std over completed runs" in ax.get_title().replace("\n", " ")
    # a completed run whose accuracy after drift is NaN (its network broke) makes that time's mean NaN
    sgd[1].extra["inference"]["3600"] = float("nan")
    nan_row = summarise_cells(cells, 0.9)[0]
    assert math.isnan(nan_row["inference_acc@3600"]) and nan_row["inference_n@3600"] == 3


def test_a_run_summarys_inference_rows_carry_their_spread_and_count():
    from imc_grapes.report import summarise

    cfg = TrainConfig(dataset="synthetic", hidden=(8,), backend="crossbar")
    hist = [{"epoch": 1.0, "test_acc": 0.8, "train_loss": 0.5}]
    runs = [RunResult(cfg.replace(seed=s), hist, "completed", extra={"inference": {"60": a}})
            for s, a in enumerate((0.6, 0.7, 0.8))]
    (row,) = summarise(runs)
    assert row["inference_acc@60"] == pytest.approx(0.7) and row["inference_acc_std@60"] == pytest.approx(0.1)
    assert row["inference_n@60"] == 3
    (row,) = summarise(runs[:1])
    assert (row["inference_acc_std@60"], row["inference_n@60"]) == (0.0, 1)


def _tick_labels(axis) -> dict[float, str]:
    """The labelled ticks inside the drawn ``axis``'s range: location -> text (figure drawn first)."""
    lo, hi = sorted(axis.get_view_interval())
    ticks = axis.get_major_ticks() + axis.get_minor_ticks()
    return {round(t.get_loc(), 9): t.label1.get_text() for t in ticks
            if lo <= t.get_loc() <= hi and t.label1.get_visible() and t.label1.get_text()}


def test_a_loss_axis_of_less_than_a_decade_has_plain_number_labels(monkeypatch, tmp_path):
    """A train loss from 1.2 to 0.9 on a log axis was labelled 9×10⁻¹, 10⁰ (and 2×10⁰ beyond 1): the labels are
    now the plain numbers of their ticks; a loss over three decades keeps the powers of ten."""
    import imc_grapes.report as report_mod

    figures = _figures(monkeypatch, report_mod)
    cfg = TrainConfig(dataset="synthetic", hidden=(8,))
    plot_curves([RunResult(cfg, HISTORY, "completed")], tmp_path / "curves.png")
    fig = figures["curves.png"]
    fig.canvas.draw()
    labels = _tick_labels(fig.axes[1].yaxis)
    assert {0.9: "0.9", 1.0: "1"}.items() <= labels.items()
    assert all(text == f"{loc:g}" for loc, text in labels.items()), labels
    wide = [dict(h, train_loss=loss) for h, loss in zip(HISTORY, (10.0, 0.01))]
    plot_curves([RunResult(cfg, wide, "completed")], tmp_path / "curves.png")
    fig = figures["curves.png"]
    fig.canvas.draw()
    labels = _tick_labels(fig.axes[1].yaxis)
    assert labels and all("10^" in text for text in labels.values()), labels      # 10⁻², 10⁻¹, 10⁰, 10¹


def test_one_evaluation_per_run_stands_on_an_epoch_axis_from_zero(monkeypatch, tmp_path):
    """A run of one evaluation drew a lone dot in the middle of an x axis of 0.96–1.04: train's and compare's
    curves now run from epoch 0 to 1.5 (half as far again past a lone point) with whole-number ticks; several
    evaluations at fractional epochs get an axis from 0 to 5 % past the last one and matplotlib's ticks."""
    import imc_grapes.compare as compare_mod
    import imc_grapes.report as report_mod

    figures = _figures(monkeypatch, report_mod)
    cfg = TrainConfig(dataset="synthetic", hidden=(8,))
    plot_curves([RunResult(cfg.replace(seed=s), HISTORY[:1], "completed") for s in (0, 1)], tmp_path / "c.png")
    for ax in figures["c.png"].axes:
        assert ax.get_xlim() == (0.0, 1.5)
        assert [t for t in ax.get_xticks() if 0 <= t <= 1.5] == [0.0, 1.0]
    figures = _figures(monkeypatch, compare_mod)
    plot_report([Cell("digital", "sgd", 0.1, [RunResult(cfg, HISTORY[:1], "completed")])],
                [{"hardware": "digital", "optimizer": "sgd", "final_test_acc_mean": 0.4, "final_test_acc_std": 0.0,
                  "runs": 1, "completed": 1}], tmp_path)
    ax = figures["curves.png"].axes[0]
    assert ax.get_xlim() == (0.0, 1.5) and [t for t in ax.get_xticks() if 0 <= t <= 1.5] == [0.0, 1.0]
    halves = [dict(h, epoch=e) for h, e in zip(HISTORY, (0.5, 1.0))]
    figures = _figures(monkeypatch, report_mod)
    plot_curves([RunResult(cfg, halves, "completed")], tmp_path / "c.png")
    ax = figures["c.png"].axes[0]
    assert ax.get_xlim() == pytest.approx((0.0, 1.05))
    assert any(not float(t).is_integer() for t in ax.get_xticks())       # 0.2, 0.4, …: not whole numbers only


def _dashes(line) -> object:
    """A line's dash pattern as given: ``(offset, (on, off))`` in points, ``(0, None)`` for a solid line
    (matplotlib keeps it there; it has no public getter)."""
    return line._unscaled_dash_pattern


def test_equal_run_curves_take_turns_in_their_dashes_and_others_stay_solid(monkeypatch, tmp_path):
    """`train`'s curves.png: SGD's and GRAPES's runs with equal histories drew the same line twice, the later
    hiding the earlier. Equal curves (same epochs, means within 0.5 % of the panel's span) now take turns in 4 pt
    dashes (offsets 0 and 4 pt: both colours show) at their true values; a curve that differs stays solid. The
    loss panel (log axis) compares in log10: a loss of 0.012 against 0.01 is 0.08 decade apart on an axis of two
    decades (not an overlap), though 0.002 is within 0.5 % of the linear span 0.99."""
    import imc_grapes.report as report_mod

    figures = _figures(monkeypatch, report_mod)
    cfg = TrainConfig(dataset="synthetic", hidden=(8,))
    same = [{"epoch": 1, "test_acc": 0.40, "train_loss": 1.0}, {"epoch": 2, "test_acc": 0.70, "train_loss": 0.01}]
    other = [{"epoch": 1, "test_acc": 0.50, "train_loss": 1.0}, {"epoch": 2, "test_acc": 0.60, "train_loss": 0.012}]
    results = [RunResult(cfg.replace(optimizer=opt, seed=s), hist, "completed")
               for opt, hist in (("sgd", same), ("layer-mean", other), ("grapes", same)) for s in (0, 1)]
    plot_curves(results, tmp_path / "curves.png")
    acc, loss = figures["curves.png"].axes
    for ax, ys in ((acc, {"sgd": [40.0, 70.0], "layer-mean": [50.0, 60.0], "grapes": [40.0, 70.0]}),
                   (loss, {"sgd": [1.0, 0.01], "layer-mean": [1.0, 0.012], "grapes": [1.0, 0.01]})):
        lines = {line.get_label().split(" (")[0]: line for line in ax.get_lines()}
        assert set(lines) == set(ys)
        for name, y in ys.items():
            assert list(lines[name].get_xdata()) == [1.0, 2.0]                 # not moved sideways
            assert list(lines[name].get_ydata()) == pytest.approx(y)
        assert _dashes(lines["sgd"]) == (0.0, (4.0, 4.0)) and _dashes(lines["grapes"]) == (4.0, (4.0, 4.0))
        assert _dashes(lines["layer-mean"]) == (0, None) and lines["layer-mean"].get_linestyle() == "-"


def test_equal_compare_cell_curves_take_turns_in_their_dashes():
    """compare's (and the experiments') curves (draw_cell_curves): SGD's and GRAPES's cells 0.1 point apart on
    an accuracy span of 30 points (within 0.5 % of it: one line on the plot) take turns in dashes; the layer-mean
    cell, 10 points away, stays solid; the x values and means are the cells' own."""
    import matplotlib.pyplot as plt

    from imc_grapes.report import draw_cell_curves

    cfg = TrainConfig(dataset="synthetic", hidden=(8,))

    def cell(opt: str, accs: tuple[float, float]) -> Cell:
        return Cell("digital", opt, 0.1, [RunResult(cfg.replace(optimizer=opt, seed=s),
                                                    [{"epoch": 1.0, "test_acc": accs[0], "train_loss": 1.0},
                                                     {"epoch": 2.0, "test_acc": accs[1], "train_loss": 0.5}],
                                                    "completed") for s in (0, 1)])

    fig, ax = plt.subplots()
    try:
        drawn = draw_cell_curves(ax, [cell("sgd", (0.5, 0.8)), cell("grapes", (0.501, 0.801)),
                                      cell("layer-mean", (0.6, 0.7))])
        lines = {line.get_label().split(" (")[0]: line for line in ax.get_lines()}
    finally:
        plt.close(fig)
    assert drawn == 3
    assert [list(lines[n].get_ydata()) for n in ("sgd", "grapes", "layer-mean")] == [
        pytest.approx([50.0, 80.0]), pytest.approx([50.1, 80.1]), pytest.approx([60.0, 70.0])]
    assert all(list(line.get_xdata()) == [1.0, 2.0] for line in lines.values())
    assert _dashes(lines["sgd"]) == (0.0, (4.0, 4.0)) and _dashes(lines["grapes"]) == (4.0, (4.0, 4.0))
    assert _dashes(lines["layer-mean"]) == (0, None)


def test_error_bars_skip_a_none_std_and_draw_the_rest_black_with_the_caps_asked_for():
    """Bars at x = 0, 1, 2 of heights 10, 20, 30 with stds 1, None (one run: no spread), 3: one errorbar call with
    the two spreads, black, ``fmt="none"``, caps of the given width; stds all None draw nothing."""
    from imc_grapes.plotting import error_bars

    calls = []

    class Ax:
        def errorbar(self, *args, **kw):
            calls.append((args, kw))

    error_bars(Ax(), [0, 1, 2], [10.0, 20.0, 30.0], [1.0, None, 3.0], capsize=4)
    assert calls == [(([0, 2], [10.0, 30.0]), {"yerr": [1.0, 3.0], "fmt": "none", "ecolor": "black", "capsize": 4})]
    error_bars(Ax(), [0, 1], [10.0, 20.0], [None, None])
    assert len(calls) == 1
