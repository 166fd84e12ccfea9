"""One table and plot across several ``imc-grapes compare`` reports — e.g. the same job on several device presets.
A group's folder of an ``imc-grapes experiment`` report (``groups/<key>``) is a compare report of that group, and is
read as one (its row labelled by the group's key).

For every report (a compare output folder, or its ``results.json``) and every hardware in it (``digital``, or the
analog device preset, with the fields changed by ``--device-param`` if any), one row: each optimizer's tuned
learning rate and test accuracy (mean ± std over the final runs' seeds, as the report's own summary gives them),
and the differences *paired by seed* (every cell of a report
trains the same seeds: same initial weights and data order) of ``method`` against ``reference`` and against
``control`` — a run's accuracy the mean of its last ``tail_evals`` evaluations, as the report's spec says, completed
runs only. Writes ``summary.md``, ``summary.csv``, ``summary.json`` and ``paired.png`` (the paired differences with
their seed std, per row). When two rows have the same label (e.g. ``digital`` of two reports), the table gets a
``report`` column and the plot's labels the report too: the shortest end of each report's path that tells the
reports apart (:func:`report_names`). A report given twice is an error::

    imc-grapes compare-summary docs/compare-mnist-* --out reports/devices
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .backends.settings import format_device_overrides
from .compare import accuracy_text, history_problem, mean_pm_std, number_problem, paired_by_seed, report_spec
from .config import ConfigError, is_int
from .io import (COMPARE_SUMMARY_HEADING, experiment_part, other_command_folder, restore_nonfinite,
                 superseded_report_note, unfinished_job_note, write_bytes_atomic, write_csv_atomic, write_json_atomic)
from .plotting import error_bars, fit_title, optimizer_color
from .report import nan_accuracy_note
from .train import tail_accuracy, tail_evals_error

__all__ = ["load_report", "report_names", "summarize", "setup_differences", "format_differences", "format_summary",
           "write_summary"]


def _results_file(path: str | Path) -> Path:
    p = Path(path)
    return p / "results.json" if os.path.isdir(p) else p


def _missing_note(folder: Path) -> str:
    """Why ``folder`` has no ``results.json`` to summarise, in parentheses: the ``groups/`` folder of an experiment
    report (its groups' folders are the reports), a group of one not finished yet, a compare job not finished
    (:func:`~imc_grapes.io.unfinished_job_note`), or none of them."""
    part = experiment_part(folder)
    if part == "the groups":
        return ("(it is the groups/ folder of an `imc-grapes experiment` report: give the group folders in it, each "
                "a compare-style report of one group)")
    if part == "a group":
        return ("(it is a group's folder of an `imc-grapes experiment` report that has not finished: run the "
                "experiment again to finish it)")
    return unfinished_job_note(folder, "compare") or "(give a report folder with results.json)"


def load_report(path: str | Path) -> dict[str, Any]:
    """The ``results.json`` of a compare report (``path``: the report folder or the file itself), or of one
    group's folder of an ``imc-grapes experiment`` report (``groups/<key>``: a compare report of that group, its
    spec under ``group``; returned with that spec as ``spec``, :func:`~imc_grapes.compare.report_spec`).

    Raises:
        ConfigError: there is none, it is not valid JSON or not of a compare report's shape
            (:func:`_shape_problem`; an experiment's own report: the message names its groups' folders), or a
            later compare job began in its folder and did not finish, so the runs beside it may be newer
            (:func:`~imc_grapes.io.superseded_report_note`); ``path`` is empty (``""``, blanks: an unset shell
            variable, which ``Path`` would read as the current folder)."""
    if not os.fspath(path).strip():
        raise ConfigError(f"an empty report path ({os.fspath(path)!r}) names no report: give a compare report folder "
                          "(or its results.json)")
    f = _results_file(path)
    if not os.path.isfile(f):     # os.path: a name too long to look at is no file either (no OSError)
        raise ConfigError(f"no compare results at {f} {_missing_note(f.parent)}")
    try:
        data = json.loads(f.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{f} is not valid JSON ({e})") from e
    except OSError as e:        # e.g. a file this user may not read
        raise ConfigError(f"cannot read {f}: {e.strerror or e}") from e
    if isinstance(data, dict) and "spec" not in data and "group" in data:     # an experiment group's folder
        group = data["group"]
        if not (isinstance(group, dict) and isinstance(group.get("key"), str) and isinstance(group.get("spec"), dict)):
            raise ConfigError(f"{f} is not the results.json of a group of an imc-grapes experiment report: 'group' "
                              f"must be a mapping with a key and a spec, got {group!r}")
        data = {**data, "spec": report_spec(data)}
    if isinstance(data, dict) and "spec" not in data and isinstance(data.get("groups"), list):
        keys = [g["key"] for g in data["groups"] if isinstance(g, dict) and isinstance(g.get("key"), str)]
        raise ConfigError(f"{f} is the results.json of an imc-grapes experiment report, not of a compare report: "
                          "give its groups' folders instead, each a compare-style report of one group: "
                          + ", ".join(str(f.parent / "groups" / k) for k in keys))
    if not isinstance(data, dict) or not {"spec", "summary", "runs"} <= set(data):
        raise ConfigError(f"{f} is not the results.json of an imc-grapes compare report "
                          "(needs 'spec', 'summary' and 'runs')")
    problem = _shape_problem(data)
    if problem:     # a damaged or hand-edited file: not a traceback, nor rows made of the letters of a string
        raise ConfigError(f"{f} is not the results.json of an imc-grapes compare report: {problem}")
    note = superseded_report_note(f.parent, data, "compare")
    if note:        # a later job was interrupted there: not its earlier results silently summarised
        raise ConfigError(f"{f}: {note}")
    return data


#: the numbers that :func:`summarize` reads of a report's summary cell (null: none, e.g. no saturation probe)
_SUMMARY_NUMBERS = ("lr", "final_test_acc_mean", "final_test_acc_std", "saturation_mean", "cost_overhead_vs_sgd")
#: its counts of the cell's final runs (absent in reports written before the summary counted them)
_SUMMARY_COUNTS = ("completed", "runs", "diverged", "failed")


def _shape_problem(data: dict[str, Any]) -> str | None:
    """What in a ``results.json``'s ``spec``, ``summary`` and ``runs`` is not as ``imc-grapes compare`` writes it
    and :func:`summarize` reads it (the first such field, with what it must be), or None."""
    spec = data["spec"]
    if not isinstance(spec, dict):
        return "'spec' must be a mapping"
    for key in ("hardware", "optimizers"):
        value = spec.get(key, [])
        if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            return f"spec.{key} must be a list of names, got {value!r}"
    if (problem := tail_evals_error(spec.get("tail_evals", 1), "spec.tail_evals")) is not None:
        return problem
    base = spec.get("base") or {}
    if not (isinstance(base, dict) and isinstance(base.get("analog") or {}, dict)):
        return "spec.base and spec.base.analog must be mappings"
    for key in ("summary", "runs"):
        if not (isinstance(data[key], list) and all(isinstance(x, dict) for x in data[key])):
            return f"'{key}' must be a list of mappings"
    for i, cell in enumerate(data["summary"]):     # the fields summarize reads of a cell, as the table formats them
        if not (isinstance(cell.get("hardware"), str) and isinstance(cell.get("optimizer"), str)):
            return f"summary[{i}] must name its hardware and optimizer, got {cell.get('hardware')!r}, " \
                   f"{cell.get('optimizer')!r}"
        problem = next((p for key in _SUMMARY_NUMBERS
                        if (p := number_problem(cell.get(key), f"summary[{i}].{key}", optional=True))), None)
        if problem:
            return problem
        for key in _SUMMARY_COUNTS:
            if key in cell and not (is_int(cell[key]) and cell[key] >= 0):
                return f"summary[{i}].{key} must be an integer ≥ 0 (a count of runs), got {cell[key]!r}"
    for i, run in enumerate(data["runs"]):
        seed = run.get("config").get("seed") if isinstance(run.get("config"), dict) else None
        if not (isinstance(run.get("hardware"), str) and isinstance(run.get("optimizer"), str)
                and isinstance(seed, int) and not isinstance(seed, bool)):
            return f"runs[{i}] must have a hardware, an optimizer and a config with an integer seed"
        problem = history_problem(run.get("history", []), ("test_acc",))
        if problem:     # not a Δ silently "—" for an accuracy that is not a number
            return f"runs[{i}] ({run['hardware']}/{run['optimizer']}, seed {seed}): {problem}"
    return None


def _label(spec: dict[str, Any], hardware: str) -> str:
    if hardware != "analog":
        return hardware
    analog = (spec.get("base") or {}).get("analog") or {}
    preset = str(analog.get("preset", "analog"))
    overrides = analog.get("device_overrides")
    if isinstance(overrides, dict) and overrides:   # the preset with changed fields: --device-param
        preset += f" {format_device_overrides(overrides)}"
    backend = spec.get("analog_backend", "crossbar")
    return preset if backend == "crossbar" else f"{preset} ({backend})"


def summarize(paths: Sequence[str | Path], method: str = "grapes", reference: str = "sgd",
              control: str = "layer-mean") -> list[dict[str, Any]]:
    """One row per (report, hardware): ``report``, ``label``, ``hardware``, ``tail_evals``, per optimizer
    ``<opt>/lr``, ``<opt>/acc_mean``, ``<opt>/acc_std`` (fractions), ``<opt>/completed`` (the completed runs
    behind them; the table shows the std as — for fewer than 2), ``<opt>/runs``, ``<opt>/diverged`` and
    ``<opt>/failed`` (the cell's final runs and those that diverged or failed: the table says ``diverged`` or
    ``no completed run`` for a cell without a completed run, as the report's own table; 0 where the report has no
    such cell), ``<opt>/saturation`` (realised / intended weight change) and ``<opt>/energy_vs_sgd`` (energy per
    step ×SGD's), None where the report has no such cell or value; and
    ``<method>-<reference>`` / ``<method>-<control>``: :func:`~imc_grapes.compare.paired_by_seed` of the final
    runs' accuracies (None where a cell is missing or no seed is common).

    Raises:
        ConfigError: ``method``, ``reference`` and ``control`` are not three different optimizers (a method against
            itself is a difference of 0 by construction), or a report is given twice.
    """
    if len({method, reference, control}) < 3:
        raise ConfigError(f"method, reference and control (--method, --reference, --control) must be "
                          f"three different optimizers, got {method!r}, {reference!r}, {control!r}")
    rows = []
    seen: dict[Path, str | Path] = {}
    for path in paths:
        data = load_report(path)
        f = _results_file(path).resolve()
        if f in seen:
            raise ConfigError(f"{path} is the same report as {seen[f]}; give each report once")
        seen[f] = path
        spec = data["spec"]
        tail = int(spec.get("tail_evals", 1))
        # an experiment group's row: its key (data set, network, hardware and device), one hardware per group
        group = data["group"]["key"] if isinstance(data.get("group"), dict) else None
        for hw in spec.get("hardware", []):
            row: dict[str, Any] = {"report": str(path), "label": group or _label(spec, hw), "hardware": hw,
                                   "tail_evals": tail}
            cells = {s["optimizer"]: s for s in data["summary"] if s.get("hardware") == hw}
            accs: dict[str, dict[int, float | None]] = {}
            stopped: dict[tuple[str, str], int] = {}
            for r in data["runs"]:
                if r.get("hardware") == hw and r.get("eval_split", "test") == "test":
                    key = (r["optimizer"], str(r.get("status")))
                    stopped[key] = stopped.get(key, 0) + 1
                    # NaN is stored as "nan" (io.restore_nonfinite): a NaN among the last evaluations makes the
                    # run's accuracy NaN, left out of the pairing, as the report's own summary leaves it out of its
                    # mean, not the mean of the others
                    history = restore_nonfinite(r.get("history") or [])
                    acc = tail_accuracy(history, tail) if r.get("status") == "completed" else None
                    accs.setdefault(r["optimizer"], {})[int(r["config"]["seed"])] = acc
            for opt in spec.get("optimizers", []):
                s = cells.get(opt, {})
                row[f"{opt}/lr"] = s.get("lr")
                # a NaN mean (a completed run without a finite accuracy) is stored as "nan": the float again
                row[f"{opt}/acc_mean"] = restore_nonfinite(s.get("final_test_acc_mean"))
                row[f"{opt}/acc_std"] = restore_nonfinite(s.get("final_test_acc_std"))
                # the completed runs behind the accuracy (reports written before the summary counted them: the runs)
                row[f"{opt}/completed"] = s.get("completed", sum(a is not None for a in accs.get(opt, {}).values()))
                # the cell's final runs, and those of them that diverged or failed (a cell of no completed run is
                # shown as such, not as "—", which is a cell the report does not have)
                row[f"{opt}/runs"] = s.get("runs", len(accs.get(opt, {})))
                for status in ("diverged", "failed"):
                    row[f"{opt}/{status}"] = s.get(status, stopped.get((opt, status), 0))
                row[f"{opt}/saturation"] = restore_nonfinite(s.get("saturation_mean"))
                row[f"{opt}/energy_vs_sgd"] = restore_nonfinite(s.get("cost_overhead_vs_sgd"))
            for other in (reference, control):
                both = method in accs and other in accs
                row[f"{method}-{other}"] = paired_by_seed(accs[method], accs[other]) if both else None
            rows.append(row)
    return rows


#: spec fields that are not a difference of setup between reports: the row's label and hardware name them (the
#: preset, its changed fields, the backend), the rows' columns show them (optimizers, lr), or the summary does not
#: use them (target_acc, inference_times) or they give the same numbers (device, cuda_graph, data_root, the base
#: config's own seed / lr / optimizer / backend, which each cell sets)
_NOT_SETUP = frozenset({"hardware", "optimizers", "analog_backend", "target_acc", "base.analog.preset",
                        "base.analog.device_overrides", "base.inference_times", "base.device", "base.cuda_graph",
                        "base.data_root", "base.seed", "base.lr", "base.optimizer", "base.backend"})


def _flat_spec(spec: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """``spec`` as dotted field names (``base.analog.adc_bits``) -> the value as JSON text (comparable, printable);
    device_overrides and extra stay one field each."""
    out: dict[str, str] = {}
    for key, value in spec.items():
        if isinstance(value, dict) and key not in ("device_overrides", "extra"):
            out.update(_flat_spec(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = json.dumps(value, sort_keys=True)
    return out


def setup_differences(paths: Sequence[str | Path]) -> list[str]:
    """What the reports at ``paths`` were run with differently beyond what each row's label says (the device
    preset, its ``--device-param`` fields, the backend): one line per spec field (``base.dataset``,
    ``base.epochs``, ``lr_grid``, ``base.analog.adc_bits``, ...) with each value and the reports
    (:func:`report_names`) that have it, e.g. ``base.epochs: 1 (cmpA, cmpB), 2 (cmpC)``. The analog fields are
    compared only among reports with analog runs. Empty when the reports differ only in their devices; the
    summary then compares like with like."""
    specs = {}
    for p in paths:
        spec = load_report(p)["spec"]
        specs[str(p)] = (_flat_spec(spec), "analog" in spec.get("hardware", []))
    names = dict(zip(specs, report_names([{"report": p} for p in specs])))
    lines = []
    for key in sorted({k for flat, _ in specs.values() for k in flat} - _NOT_SETUP):
        values: dict[str, list[str]] = {}
        for p, (flat, analog) in specs.items():
            if analog or not key.startswith("base.analog."):
                values.setdefault(flat.get(key, "(not recorded)"), []).append(names[p])
        if len(values) > 1:
            lines.append(f"{key}: " + ", ".join(f"{v} ({', '.join(reps)})" for v, reps in values.items()))
    return lines


def format_differences(lines: Sequence[str]) -> str:
    """The :func:`setup_differences` as a note under the table (Markdown list); "" without any."""
    if not lines:
        return ""
    return ("The reports differ in more than their devices (compare their rows with care):\n\n"
            + "\n".join(f"- {line}" for line in lines))


def report_names(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Per row, the shortest end of its report's path (``report``; a ``results.json`` stands for its folder) that
    tells the rows' reports apart: the folder's name (``cmpA``), else as many of its last folders as needed
    (``x/cmp``, ``y/cmp``)."""
    def parts(report: str) -> tuple[str, ...]:
        p = Path(os.path.abspath(report))
        return (p.parent if p.suffix == ".json" else p).parts

    reports = {r["report"]: parts(str(r["report"])) for r in rows}

    def name(rep: str) -> str:
        p = reports[rep]
        k = next((k for k in range(1, len(p)) if all(q[-k:] != p[-k:] for o, q in reports.items() if o != rep)),
                 len(p))
        return "/".join(p[-k:])

    names = {rep: name(rep) for rep in reports}
    return [names[r["report"]] for r in rows]


def _labels_repeat(rows: Sequence[dict[str, Any]]) -> bool:
    labels = [r["label"] for r in rows]
    return len(set(labels)) < len(labels)


def _acc(row: dict[str, Any], opt: str) -> str:
    m, s, lr = row.get(f"{opt}/acc_mean"), row.get(f"{opt}/acc_std"), row.get(f"{opt}/lr")
    runs = row.get(f"{opt}/runs")
    if m is None and not runs:      # no such cell in the report (or a row written before runs were counted)
        return "—"
    return (accuracy_text(m, s, int(row.get(f"{opt}/completed") or 0), int(runs or 0),
                          int(row.get(f"{opt}/diverged") or 0), int(row.get(f"{opt}/failed") or 0))
            + (f" (lr {lr:g})" if lr is not None else ""))


def _diff(p: dict[str, Any] | None) -> str:
    return "—" if p is None else f"{mean_pm_std(p['mean'], p['std'], p['n'], sign=True)} ({p['positive']}/{p['n']})"


def format_summary(rows: Sequence[dict[str, Any]], method: str = "grapes", reference: str = "sgd",
                   control: str = "layer-mean") -> str:
    """The rows as a Markdown table (accuracies in %, tuned lr in parentheses; Δ mean ± std over the common seeds,
    and on how many of them the difference is positive; the reference's saturation and the method's energy per
    step ×SGD's). When a label repeats, a first ``report`` column names each row's report (:func:`report_names`).
    An accuracy that is NaN reads ``nan``, and a paragraph below the table
    (:data:`~imc_grapes.report.NAN_ACCURACY_NOTE`) says why."""
    opts = [reference, method, control]
    names = report_names(rows) if _labels_repeat(rows) else None
    head = [*(["report"] if names else []), "hardware", *opts, f"Δ {method} − {reference}",
            f"Δ {method} − {control}", f"saturation ({reference})", f"energy ×SGD ({method})"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, r in enumerate(rows):
        sat, energy = r.get(f"{reference}/saturation"), r.get(f"{method}/energy_vs_sgd")
        cells = [*([names[i]] if names else []), r["label"], *(_acc(r, o) for o in opts),
                 _diff(r.get(f"{method}-{reference}")), _diff(r.get(f"{method}-{control}")),
                 "—" if sat is None else f"{sat:.2f}", "—" if energy is None else f"{energy:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    note = nan_accuracy_note(r.get(f"{o}/acc_mean") for r in rows for o in opts)
    return "\n".join(lines + (["", note] if note else []))       # a paragraph of its own, not a row of the table


def _plot(rows: Sequence[dict[str, Any]], method: str, others: Sequence[str]) -> bytes:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(rows) + 2), 4.0))
    width = 0.8 / len(others)
    for k, other in enumerate(others):
        xs, ms, ss = [], [], []
        for i, r in enumerate(rows):
            p = r.get(f"{method}-{other}")
            if p is not None:
                xs.append(i + (k - (len(others) - 1) / 2) * width)
                ms.append(100 * p["mean"])
                ss.append(100 * p["std"] if int(p.get("n", 2)) >= 2 else None)   # one seed: no spread, no bar
        if xs:      # an empty series would still get a legend entry
            # the colour of the optimizer compared against (SGD blue, the layer-mean control green, as elsewhere)
            ax.bar(xs, ms, width, color=optimizer_color(other, k), label=f"{method} − {other}")
            error_bars(ax, xs, ms, ss)
    ax.axhline(0.0, color="black", lw=0.8)
    names = report_names(rows) if _labels_repeat(rows) else None
    ax.set_xticks(range(len(rows)), [f"{names[i]}: {r['label']}" if names else r["label"] for i, r in enumerate(rows)],
                  rotation=30, ha="right")
    ax.set(ylabel="paired difference in test accuracy (points)",
           title=fit_title(fig, f"{method} against the others, paired by seed (mean ± std over seeds)"))
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    else:       # no row has a paired difference: an empty plot that says so (no legend warning)
        ax.text(0.5, 0.5, "no paired difference\n(no seed completed by both cells)", ha="center", va="center",
                transform=ax.transAxes, color="0.4")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    return buf.getvalue()


def write_summary(rows: Sequence[dict[str, Any]], out_dir: str | Path, method: str = "grapes",
                  reference: str = "sgd", control: str = "layer-mean", command: str | None = None,
                  differences: Sequence[str] = ()) -> list[str]:
    """Write ``summary.md`` (the table of :func:`format_summary`, with the command, and the reports'
    ``differences`` of setup, :func:`setup_differences`, under it), ``summary.csv`` (one flat row per report and
    hardware), ``summary.json`` (with ``setup_differences`` when there are any) and ``paired.png`` into
    ``out_dir``; returns the file names.

    Raises:
        ConfigError: ``out_dir`` holds another command's output (:func:`~imc_grapes.io.other_command_folder`: a
            train job's summary, a compare or experiment report, a sweep), whose files these would overwrite or
            mix with (the message names ``out_dir`` and ends ``give another folder``); a folder of an earlier
            compare-summary (also one stopped before its summary.json) is written again.
    """
    theirs = other_command_folder(out_dir, "compare-summary")
    if theirs is not None:      # a Python caller's: no --out to name (the command checks its --out before)
        raise ConfigError(f"out_dir: {theirs}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    text = COMPARE_SUMMARY_HEADING + "\n"
    if command:
        text += f"Command:\n\n```\n{command}\n```\n\n"
    note = format_differences(differences)
    text += format_summary(rows, method, reference, control) + (f"\n\n{note}" if note else "")
    text += ("\n\nAccuracy: test %, mean ± std over each report's "
             "seeds (tuned lr). Δ: paired by seed over the seeds both cells completed, mean ± std (seeds with a "
             "positive difference / seeds). Every std is the sample standard deviation over the seeds (n − 1), — "
             "for a single seed.\n\n![paired differences](paired.png)\n")
    write_bytes_atomic(out / "summary.md", text.encode())
    flat = []
    pairs = [f"{method}-{other}" for other in (reference, control)]
    for r in rows:
        f = {k: v for k, v in r.items() if k not in pairs}
        for name in pairs:
            p = r.get(name) or {}
            f.update({f"{name}/{key}": p.get(key) for key in ("mean", "std", "n", "positive", "negative")})
        flat.append(f)
    write_csv_atomic(out / "summary.csv", flat)
    write_json_atomic(out / "summary.json", {"command": command, "method": method, "reference": reference,
                                             "control": control, "rows": list(rows),
                                             **({"setup_differences": list(differences)} if differences else {})})
    write_bytes_atomic(out / "paired.png", _plot(rows, method, (reference, control)))
    return ["summary.md", "summary.csv", "summary.json", "paired.png"]
