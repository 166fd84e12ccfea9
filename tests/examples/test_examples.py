"""Every script in examples/ runs end to end in its small mode (synthetic data), prints what its docstring says
and writes where it says; each explains itself under ``--help`` and can be imported without running.

The scripts are the API's showcase, so a change that breaks one fails here. Each runs in a temporary working
directory (they write ``runs/...`` relative to it) with the repository on ``PYTHONPATH``. The printed numbers are
checked against what the runs recorded on disk (``results.json``, ``summary.csv``) or against counts worked out
by hand from the script's sizes.
"""
import csv
import importlib.util
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Callable

import pytest

REPO = Path(__file__).resolve().parents[2]
PCT = r"(-?\d+\.\d+)"


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _cell(rows: list[dict[str, str]], **match: str) -> float:
    """final_test_acc_mean (%) of the one summary row matching ``match``."""
    found = [r for r in rows if all(r[k] == v for k, v in match.items())]
    assert len(found) == 1, (match, found)
    return 100 * float(found[0]["final_test_acc_mean"])


def check_exp_mlp(out: str, cwd: Path) -> None:
    rows = _rows(cwd / "runs/examples/exp_mlp/summary.csv")
    # one seed (tiny) has no seed-to-seed spread: the std is shown as —, as in the reports (it was ± 0.00)
    lines = re.findall(rf"(\S+) +(\S+) +GRAPES − SGD: ([+-]\d+\.\d+) ± — points \((\d+)/(\d+) seeds higher\)", out)
    assert len(lines) == len({r["group"] for r in rows if r["hardware"] == "digital"}) >= 2, out
    for dataset, network, diff, _, n in lines:
        grapes = _cell(rows, dataset=dataset, network=network, optimizer="grapes")
        sgd = _cell(rows, dataset=dataset, network=network, optimizer="sgd")
        assert float(diff) == pytest.approx(grapes - sgd, abs=0.006)
        assert int(n) == 1   # tiny: one seed
    assert (cwd / "runs/examples/exp_mlp/report.md").is_file()


def check_exp_fa_dfa(out: str, cwd: Path) -> None:
    rows = _rows(cwd / "runs/examples/exp_fa_dfa/summary.csv")
    lines = re.findall(rf"(\S+) +(D?FA) (\S+) +lr (\S+) +test acc {PCT} ± — %", out)   # one seed: no std
    assert sorted((rule, opt) for _, rule, opt, *_ in lines) == sorted(
        (rule, opt) for rule in ("FA", "DFA") for opt in ("sgd", "grapes", "layer-mean")), out
    for dataset, rule, opt, lr, acc in lines:
        assert float(acc) == pytest.approx(_cell(rows, dataset=dataset, rule=rule, optimizer=opt, lr=lr), abs=0.006)
    assert (cwd / "runs/examples/exp_fa_dfa/report.md").is_file()


def check_exp_cnn(out: str, cwd: Path) -> None:
    rows = _rows(cwd / "runs/examples/exp_cnn/summary.csv")
    groups = {r["group"] for r in rows}
    assert {r["hardware"] for r in rows} == {"digital", "crossbar ReRamSB"}   # --preset defaults to ReRamSB
    vs_sgd = dict(re.findall(r"\* `([^`]+)`: GRAPES vs SGD: final accuracy ([+-]\d+\.\d+)", out))
    assert set(vs_sgd) == groups, out
    for group, diff in vs_sgd.items():
        assert float(diff) == pytest.approx(_cell(rows, group=group, optimizer="grapes")
                                            - _cell(rows, group=group, optimizer="sgd"), abs=0.006)
    assert (cwd / "runs/examples/exp_cnn/report.md").is_file()


def _final_acc(run_dir: Path) -> float:
    return 100 * json.loads((run_dir / "results.json").read_text())["final"]["test_acc"]


def check_exp_rnn(out: str, cwd: Path) -> None:
    accs = dict(re.findall(rf"^(sgd|grapes) +test accuracy {PCT} %$", out, re.M))
    assert set(accs) == {"sgd", "grapes"}, out
    for opt, acc in accs.items():
        run = json.loads((cwd / f"runs/examples/exp_rnn/{opt}/results.json").read_text())
        assert run["config"]["extra"]["model"]["kind"] == "lstm"
        assert float(acc) == pytest.approx(100 * run["final"]["test_acc"], abs=0.006)


def check_exp_snn(out: str, cwd: Path) -> None:
    accs = dict(re.findall(rf"^(SGD|GRAPES) +test accuracy {PCT} %$", out, re.M))
    assert set(accs) == {"SGD", "GRAPES"}, out
    for acc in accs.values():   # a share of the 256 test samples of the tiny mode
        assert 0 <= float(acc) <= 100 and abs(float(acc) * 256 / 100 - round(float(acc) * 256 / 100)) < 0.02


def check_exp_forgetting(out: str, cwd: Path) -> None:
    blocks = re.split(r"^(sgd|grapes): accuracy on task i \(rows\) after training task j \(columns\), %$", out,
                      flags=re.M)[1:]
    assert blocks[0::2] == ["sgd", "grapes"], out
    for opt, block in zip(blocks[0::2], blocks[1::2]):
        lines = block.strip().splitlines()
        matrix = [line.split() for line in lines[:5]]
        assert all(row[:i] == ["."] * i and len(row) == 5 for i, row in enumerate(matrix)), block
        r = [[float(a) for a in row[i:]] for i, row in enumerate(matrix)]   # r[i][k]: task i after task i + k
        avg, forgetting, bwt = map(float, re.findall(r"[+-]?\d+\.\d+", lines[5]))
        final = json.loads((cwd / f"runs/examples/exp_forgetting/{opt}/results.json").read_text())["final"]
        last = [100 * final[f"acc/task{i}"] for i in range(5)]
        assert [row[-1] for row in r] == [round(a) for a in last]
        assert avg == pytest.approx(sum(last) / 5, abs=0.006)
        # the definitions, from the printed (rounded to 1 point) matrix: forgetting = mean over the first 4 tasks of
        # (best accuracy before the last task − final), BWT = mean of (final − just after training the task)
        assert forgetting == pytest.approx(sum(max(row[:-1]) - row[-1] for row in r[:4]) / 4, abs=1.0)
        assert bwt == pytest.approx(sum(row[-1] - row[0] for row in r[:4]) / 4, abs=1.0)


def check_train_mnist_grapes(out: str, cwd: Path) -> None:
    table = dict(re.findall(rf"^(sgd|grapes) +1 +{PCT} ± —", out, re.M))    # one run: no std (was ± 0.00)
    assert set(table) == {"sgd", "grapes"}, out
    for opt, acc in table.items():
        assert float(acc) == pytest.approx(_final_acc(cwd / f"runs/examples/train_mnist_grapes/{opt}"), abs=0.006)


def check_compare_analog(out: str, cwd: Path) -> None:
    rows = re.findall(rf"^(digital|analog) +(sgd|grapes|layer-mean) +0\.1 +{PCT} ± ", out, re.M)
    assert sorted((hw, opt) for hw, opt, _ in rows) == sorted(
        (hw, opt) for hw in ("digital", "analog") for opt in ("sgd", "grapes", "layer-mean")), out
    report = cwd / "runs/examples/compare_analog"
    assert "report: runs/examples/compare_analog/report.md" in out
    for name in ("report.md", "results.json", "results.csv", "curves.png", "accuracy.png", "inference.png"):
        assert (report / name).is_file(), name
    runs = json.loads((report / "results.json").read_text())
    text = json.dumps(runs)
    assert '"importance": "array"' in text and '"preset": "ReRamSB"' in text


def check_analog_layer_grapes(out: str, cwd: Path) -> None:
    epochs = re.findall(rf"^epoch (\d): test accuracy (\d+\.\d)%, mean GRAPES factor (\d+\.\d+)$", out, re.M)
    assert [e for e, _, _ in epochs] == ["1", "2", "3"], out
    assert all(1.0 <= float(m) <= 2.0 for _, _, m in epochs)   # propagated GRAPES: M = 2F/max F clipped to [1, 2]
    counters = {k: int(v) for k, v in re.findall(r"'(\w+)': (\d+)", out.splitlines()[-1])}
    # 3 epochs of 2000 training samples in batches of 32 (63 batches, the last partial) and 500 test samples, on a
    # 64-input, 128-output layer whose input needs no gradient (no backward MVMs); each batch reads the importance
    # once: one all-ones MVM
    steps, mvms = 3 * math.ceil(2000 / 32), 3 * (2000 + 500)
    assert counters["forward_mvms"] == counters["forward_passes"] == mvms
    assert counters["backward_mvms"] == 0
    assert counters["updates"] == counters["importance_reads"] == steps
    assert counters["dac_conversions"] == 64 * (mvms + steps)
    assert counters["adc_conversions"] == 128 * (mvms + steps)
    assert counters["pulses"] > 0


def check_replica_seeds(out: str, cwd: Path) -> None:
    accs = [float(a) for a in re.findall(rf"^  seed \d+: test accuracy {PCT} % \(completed\)$", out, re.M)]
    assert len(accs) == 3 and out.startswith("3 GRAPES runs on an EcRam crossbar"), out
    found = re.search(rf"mean ± std over seeds: {PCT} ± {PCT} %", out)
    assert found, out
    mean, std = map(float, found.groups())
    m = sum(accs) / 3
    assert mean == pytest.approx(m, abs=0.006)
    assert std == pytest.approx(math.sqrt(sum((a - m) ** 2 for a in accs) / 2), abs=0.01)
    assert "the same metrics as its replica" in out.splitlines()[-1]
    assert re.search(rf"seed 2 trained alone: test accuracy {accs[-1]:.2f} %", out)


# script -> (arguments of its small mode, the check of its output (stdout, working directory))
SMALL: dict[str, tuple[list[str], Callable[[str, Path], None]]] = {
    "exp_mlp.py": (["--tiny"], check_exp_mlp),
    "exp_fa_dfa.py": (["--tiny"], check_exp_fa_dfa),
    "exp_cnn.py": (["--tiny"], check_exp_cnn),
    "exp_rnn.py": (["--tiny"], check_exp_rnn),
    "exp_snn.py": (["--tiny"], check_exp_snn),
    "exp_forgetting.py": (["--tiny"], check_exp_forgetting),
    "train_mnist_grapes.py": (["--synthetic"], check_train_mnist_grapes),
    "compare_analog.py": (["--synthetic"], check_compare_analog),
    "analog_layer_grapes.py": ([], check_analog_layer_grapes),
    "replica_seeds.py": (["--synthetic", "--seeds", "3"], check_replica_seeds),
}


def _env(threads: int = 1) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": str(threads), "MPLBACKEND": "Agg"}


def _import(script: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{Path(script).stem}", REPO / "examples" / script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_example_is_covered():
    assert sorted(SMALL) == sorted(p.name for p in (REPO / "examples").glob("*.py"))


#: the scripts that run a whole named experiment (minutes at their quick size): script -> (experiment, report folder)
EXPERIMENTS = {"exp_mlp.py": ("mlp", "runs/examples/exp_mlp"), "exp_fa_dfa.py": ("fa-dfa", "runs/examples/exp_fa_dfa"),
               "exp_cnn.py": ("cnn", "runs/examples/exp_cnn")}


def check_progress(script: str, err: str, cwd: Path) -> None:
    """A script that runs a whole experiment said nothing until its summary (minutes at its quick size): each group
    and each run is announced on stderr as it starts, and stdout keeps the summary alone."""
    name, folder = EXPERIMENTS[script]
    groups = sorted(p.name for p in (cwd / folder / "groups").iterdir() if p.is_dir())
    announced = re.findall(rf"^=== {re.escape(name)}: group (\S+) \((\d+)/(\d+)\)$", err, re.M)
    assert sorted(key for key, _, _ in announced) == groups, err
    assert [(int(i), int(n)) for _, i, n in announced] == [(i, len(groups)) for i in range(1, len(groups) + 1)]
    # each group: every optimizer's final run (one seed at tiny) after its tuning runs
    final_runs = re.findall(r"^== (\S+): (sgd|grapes|layer-mean) lr=\S+ seed=0$", err, re.M)
    assert sorted(final_runs) == sorted((g, o) for g in groups for o in ("sgd", "grapes", "layer-mean")), err


def _run_progress(err: str, cwd: Path, folder: str, lr: str, per_run: Callable[[str, list[str], dict], None]) -> None:
    """The progress of a script that trains an SGD then a GRAPES run (seed 0, learning rate ``lr``) into
    ``folder/<optimizer>``: each run announced on stderr as it starts, then its own lines (checked by ``per_run``
    against the run's results.json)."""
    lines = err.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("== ")]
    assert [lines[i] for i in starts] == [f"== {opt} lr={lr} seed=0" for opt in ("sgd", "grapes")], err
    for opt, begin, end in zip(("sgd", "grapes"), starts, [*starts[1:], len(lines)]):
        per_run(opt, lines[begin + 1:end], json.loads((cwd / folder / opt / "results.json").read_text()))


def check_progress_rnn(err: str, cwd: Path) -> None:
    """exp_rnn: each run's one epoch line, with the loss and test accuracy its results.json holds."""
    def per_run(opt: str, lines: list[str], run: dict) -> None:
        (loss, acc), = [tuple(map(float, m)) for m in re.findall(
            rf"^\[{opt}\] epoch 1/1: train loss (\d+\.\d+), test acc {PCT}%$", "\n".join(lines), re.M)]
        assert len(lines) == 1
        assert loss == pytest.approx(run["final"]["train_loss"], abs=6e-5)
        assert acc == pytest.approx(100 * run["final"]["test_acc"], abs=0.006)

    _run_progress(err, cwd, "runs/examples/exp_rnn", "0.3", per_run)


def check_progress_forgetting(err: str, cwd: Path) -> None:
    """exp_forgetting: after task t (1 to 5) of each run, its accuracy on the tasks 1 to t so far (one decimal),
    as its results.json's history row of that task holds them."""
    def per_run(opt: str, lines: list[str], run: dict) -> None:
        assert len(lines) == 5
        for t, (line, row) in enumerate(zip(lines, run["history"]), start=1):
            prefix = f"[{opt}] task {t}/5: acc on tasks so far "
            assert line.startswith(prefix) and line.endswith(" %"), line
            accs = [float(a) for a in line[len(prefix):-2].split()]
            assert accs == pytest.approx([100 * row[f"acc/task{i}"] for i in range(t)], abs=0.051)

    _run_progress(err, cwd, "runs/examples/exp_forgetting", "0.001", per_run)


def check_progress_snn(err: str, cwd: Path) -> None:
    """exp_snn (a plain torch loop, no run folder): each run announced as it starts, with its 512 / 64 = 8 batches
    and the tiny network's 8 time steps."""
    assert err.splitlines() == [f"== {name}: lr=0.3 seed=0, 8 batches of 64, 8 time steps"
                                for name in ("SGD", "GRAPES")]


#: the scripts that train two runs (SGD, GRAPES), silent for tens of seconds each at their default size: the check
#: of their progress on stderr
RUNS: dict[str, Callable[[str, Path], None]] = {"exp_rnn.py": check_progress_rnn,
                                                "exp_forgetting.py": check_progress_forgetting,
                                                "exp_snn.py": check_progress_snn}


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(SMALL))
def test_example_runs(script, tmp_path):
    args, check = SMALL[script]
    out = subprocess.run([sys.executable, str(REPO / "examples" / script), *args], cwd=tmp_path, env=_env(),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    check(out.stdout, tmp_path)
    if script in EXPERIMENTS:
        check_progress(script, out.stderr, tmp_path)
        assert "=== " not in out.stdout and "epoch 1/1" not in out.stdout
    if script in RUNS:
        RUNS[script](out.stderr, tmp_path)
        assert not re.search(r"^(== |\[)", out.stdout, re.M)


@pytest.mark.parametrize("script", sorted(SMALL))
def test_example_imports_without_running_and_explains_itself(script, tmp_path, monkeypatch, capsys):
    """Importing a script defines ``main`` and runs nothing; ``--help`` prints its docstring and a help text for
    every option, and exits 0 without training."""
    monkeypatch.chdir(tmp_path)
    module = _import(script)
    assert capsys.readouterr().out == "" and not any(tmp_path.iterdir())
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert module.__doc__.splitlines()[0] in text and f"python examples/{script}" in text
    options = re.findall(r"^  (--[\w-]+)(.*)$", text, re.M)
    assert all(rest.strip() and not re.fullmatch(r" [A-Z_]+", rest) for _, rest in options), text
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("script, option, default", [("replica_seeds.py", "--seeds", 6),
                                                     ("train_mnist_grapes.py", "--epochs", 1)])
@pytest.mark.parametrize("value", [0, -1])
def test_a_count_below_one_is_refused_and_help_states_the_range(script, option, default, value, tmp_path, monkeypatch,
                                                                 capsys):
    """``train_mnist_grapes.py --epochs 0`` ran into a ConfigError traceback of TrainConfig (exit 1): both counts are
    refused as a usage error (exit 2) that names the option and its range, before anything runs; --help states the
    range and the default."""
    monkeypatch.chdir(tmp_path)
    module = _import(script)
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--synthetic", option, str(value)])
    assert exit_info.value.code == 2 and f"{option} must be at least 1, got {value}" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        module.main(["--help"])
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith(f"  {option} "))
    assert line.endswith(f", ≥ 1 (default {default})"), line
    assert not any(tmp_path.iterdir())


def test_exp_cnn_refuses_an_unknown_preset_and_suggests_one(tmp_path, monkeypatch, capsys):
    """A mistyped --preset ran into a traceback of ExperimentOptions (exit 1) instead of a usage error: it exits 2
    naming the option, the presets and the nearest one, and runs nothing; --help lists the presets and the default."""
    monkeypatch.chdir(tmp_path)
    module = _import("exp_cnn.py")
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--tiny", "--preset", "EcRAM"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --preset: invalid choice: 'EcRAM'" in err and "did you mean 'EcRam'?" in err
    assert "'ReRamSB'" in err and "'GokmenVlasov'" in err
    with pytest.raises(SystemExit):
        module.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "device preset of the analog runs: ReRamES, ReRamSB, Capacitor, EcRam," in text
    assert "(default ReRamSB)" in text
    assert not any(tmp_path.iterdir())


def test_replica_seeds_with_one_seed_prints_no_std(tmp_path):
    """One seed has no seed-to-seed spread: the std is shown as — (torch's std of one value printed ± nan)."""
    out = subprocess.run([sys.executable, str(REPO / "examples" / "replica_seeds.py"), "--synthetic", "--seeds", "1"],
                         cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    acc = re.search(rf"^  seed 0: test accuracy {PCT} % \(completed\)$", out.stdout, re.M)
    assert acc, out.stdout
    assert f"mean ± std over seeds: {acc.group(1)} ± — %" in out.stdout and "nan" not in out.stdout


def test_replica_seeds_agree_with_several_threads(tmp_path):
    """With two torch threads the sat/* ratios (float32 sums) of a replica and of the same seed trained alone may
    differ in the last bit: the example compares them to a tolerance it states, every other metric exactly, and
    so reports the same metrics (it said "DIFFERENT metrics" for a last-bit difference)."""
    out = subprocess.run([sys.executable, str(REPO / "examples" / "replica_seeds.py"), "--synthetic"], cwd=tmp_path,
                         env=_env(threads=2), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    last = out.stdout.strip().splitlines()[-1]
    assert "the same metrics as its replica" in last and "compared to a relative 1e-05" in last, last


@pytest.mark.parametrize("script", sorted(SMALL))
def test_example_refuses_an_abbreviated_option_and_suggests_it(script, tmp_path, monkeypatch, capsys):
    """An example takes no abbreviated option, as ``imc-grapes`` and the benchmark scripts take none
    (:class:`~imc_grapes.suggest.SuggestingArgumentParser`): each of its long options less its last letter exits 2,
    suggests the option, and runs nothing (argparse's default would read it as the option)."""
    monkeypatch.chdir(tmp_path)
    module = _import(script)
    with pytest.raises(SystemExit):
        module.main(["--help"])
    options = [o for o in re.findall(r"^  (--[\w-]+)", capsys.readouterr().out, re.M) if o != "--help"]
    shortened = [(o[:-1], o) for o in options if len(o) > 3 and [p for p in options if p.startswith(o[:-1])] == [o]]
    assert shortened or not options, f"{script}: no option to shorten among {options}"   # one has no option
    for short, option in shortened:
        with pytest.raises(SystemExit) as exit_info:
            module.main([short])
        assert exit_info.value.code == 2
        assert f"did you mean '{option}'?" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
