"""imc_grapes.interrupts: a stop (SIGTERM, Ctrl-C) whose exception Python swallows (raised inside a ``__del__`` or a
weakref callback, printed as "Exception ignored in") is still honoured at the next safe point."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import imc_grapes.train  # noqa: F401  (the package exports a function ``train``: the module is reached by name)
from imc_grapes import interrupts
from imc_grapes.config import TrainConfig
from imc_grapes.interrupts import Terminated, sigterm_as_interrupt

from .test_sweep_run import write_spec

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sends signals to its own process")
T = sys.modules["imc_grapes.train"]
TINY = dict(dataset="synthetic", hidden=(16,), optimizer="sgd", lr=0.05, batch_size=50, train_subset=200,
            test_subset=100)
ROOT = Path(T.__file__).resolve().parents[1]


class SignalInDel:
    """Sends ``sig`` to its own process when collected, then runs a few more bytecodes: the signal's handler runs
    inside ``__del__``, whose exception CPython prints ("Exception ignored in") and discards."""

    def __init__(self, sig: int) -> None:
        self.sig = sig

    def __del__(self) -> None:
        os.kill(os.getpid(), self.sig)
        for _ in range(100):
            pass


@pytest.fixture
def default_sigint() -> Iterator[None]:
    """Python's own Ctrl-C handler (a test run started in the background by a shell inherits an ignored SIGINT)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def swallow(sig: int) -> list[type[BaseException]]:
    """Send ``sig`` from a ``__del__`` and return the types of the exceptions Python swallowed meanwhile."""
    seen: list[type[BaseException]] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "unraisablehook", lambda u: seen.append(u.exc_type))
        obj = SignalInDel(sig)
        del obj
    return seen


def nothing_raised() -> None:
    """:func:`interrupts.raise_if_stop_requested` raises nothing (a ``KeyboardInterrupt`` escaping a test would end
    the whole pytest session: it is turned into a failure)."""
    try:
        interrupts.raise_if_stop_requested()
    except KeyboardInterrupt as exc:
        pytest.fail(f"raise_if_stop_requested raised {exc!r}")


@pytest.mark.parametrize("sig, exc", [(signal.SIGTERM, Terminated), (signal.SIGINT, KeyboardInterrupt)])
def test_a_stop_swallowed_in_a_del_is_raised_once_at_the_next_safe_point(default_sigint, sig, exc):
    with sigterm_as_interrupt():
        assert swallow(sig) == [exc]                  # what happened before: printed, discarded, the command ran on
        with pytest.raises(exc) as caught:
            interrupts.raise_if_stop_requested()
        assert type(caught.value) is exc              # a Ctrl-C stays a plain KeyboardInterrupt (exit status 130)
        nothing_raised()  # raised once
    nothing_raised()  # outside the block: nothing to raise


def test_a_stop_swallowed_after_the_last_safe_point_is_raised_when_the_block_ends():
    with pytest.raises(Terminated):
        with sigterm_as_interrupt():
            assert swallow(signal.SIGTERM) == [Terminated]
    nothing_raised()


def test_the_request_is_cleared_when_the_block_is_entered_and_left_by_an_exception():
    interrupts._requested = signal.SIGTERM           # e.g. left by a block of an earlier command in this process
    with sigterm_as_interrupt():
        nothing_raised()  # not this block's request
        with pytest.raises(Terminated):               # delivered; the block is left by it
            with sigterm_as_interrupt():
                os.kill(os.getpid(), signal.SIGTERM)
                for _ in range(100):
                    pass
        nothing_raised()  # the inner block's stop was delivered and handled


def test_an_ignored_sigint_stays_ignored_within_the_block():
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)    # e.g. a command started with `cmd &` by a script
    try:
        with sigterm_as_interrupt():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(100):
                pass
            nothing_raised()
    finally:
        signal.signal(signal.SIGINT, previous)


def test_the_block_restores_both_handlers(default_sigint):
    before = signal.getsignal(signal.SIGTERM)
    with sigterm_as_interrupt():
        assert signal.getsignal(signal.SIGTERM) is not before
        assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    assert signal.getsignal(signal.SIGTERM) is before
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def stop_at_step(monkeypatch: pytest.MonkeyPatch, at: int, stop: Callable[[], None]) -> None:
    """Call ``stop()`` in the ``at``-th training step (before the step's own work)."""
    real, calls = T.training_step, [0]

    def step(*args, **kwargs):
        calls[0] += 1
        if calls[0] == at:
            stop()
        return real(*args, **kwargs)

    monkeypatch.setattr(T, "training_step", step)


def test_a_stop_swallowed_during_training_stops_the_run_within_a_batch(tmp_path, monkeypatch, one_torch_thread):
    """4 batches per epoch, evaluated after each: the stop swallowed in step 3 is raised before step 3's evaluation,
    the run is recorded interrupted with the rows of steps 1 and 2, and nothing is raised again afterwards."""
    seen: list[type[BaseException]] = []

    def stop() -> None:
        seen.extend(swallow(signal.SIGTERM))

    stop_at_step(monkeypatch, 3, stop)
    cfg = TrainConfig(**TINY, epochs=3, evals_per_epoch=4)
    with sigterm_as_interrupt():
        with pytest.raises(Terminated):
            T.train(cfg, tmp_path / "run", progress=False, log=lambda _m: None)
        nothing_raised()  # handled: the command's cleanup is not stopped again
    assert seen == [Terminated]
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res["status"] == "interrupted" and res["message"] == "interrupted (Terminated)"
    assert [h["global_step"] for h in res["history"]] == [1, 2]


def test_a_delivered_stop_recorded_by_the_run_is_not_raised_again(tmp_path, monkeypatch, one_torch_thread):
    def stop() -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(100):
            pass

    stop_at_step(monkeypatch, 3, stop)
    with sigterm_as_interrupt():
        with pytest.raises(Terminated):
            T.train(TrainConfig(**TINY, epochs=3, evals_per_epoch=4), tmp_path / "run", progress=False,
                    log=lambda _m: None)
        nothing_raised()  # the run recorded it: the cleanup after it runs on
    assert json.loads((tmp_path / "run" / "results.json").read_text())["status"] == "interrupted"


DRIVER = textwrap.dedent("""
    import os, sys
    import imc_grapes.cli
    train = sys.modules["imc_grapes.train"]

    class SignalInDel:
        def __init__(self, sig):
            self.sig = sig

        def __del__(self):
            os.kill(os.getpid(), self.sig)
            for _ in range(100):
                pass

    real, calls = train.training_step, [0]

    def step(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 3:
            obj = SignalInDel(int(os.environ["STOP_SIGNAL"]))
            del obj
        return real(*args, **kwargs)

    train.training_step = step
    sys.exit(imc_grapes.cli.main(sys.argv[1:]))
""")


@pytest.mark.parametrize("sig, code, name", [("SIGTERM", 143, "Terminated"), ("SIGINT", 130, "KeyboardInterrupt")])
def test_the_train_command_honours_a_stop_swallowed_in_a_del(tmp_path, sig, code, name):
    """``imc-grapes train`` in a child process whose third training step collects an object whose ``__del__`` sends
    the signal: Python prints the exception as ignored, and the command still stops within a batch with 143 / 130
    and the run recorded interrupted (before: it trained on to the end and exited 0)."""
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    out = tmp_path / "out"
    cmd = [sys.executable, str(driver), "train", "--dataset", "synthetic", "--hidden", "16", "--optimizer", "sgd",
           "--train-subset", "200", "--test-subset", "100", "--batch-size", "50", "--evals-per-epoch", "4",
           "--epochs", "3", "--no-progress", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "STOP_SIGNAL": str(int(getattr(signal, sig))),
           "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, env=env, timeout=300,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    err = proc.stderr.decode()
    assert "Exception ignored in" in err and name in err, err   # the handler's exception was indeed swallowed
    assert proc.returncode == code, err
    res = json.loads(next(out.glob("*/results.json")).read_text())
    assert res["status"] == "interrupted" and res["message"] == f"interrupted ({name})"
    assert [h["global_step"] for h in res["history"]] == [1, 2]
    assert "the run in progress is recorded as interrupted" in err


def test_a_compare_or_experiment_run_starts_at_a_safe_point(tmp_path):
    """``compare`` and ``experiment`` train each run through :func:`imc_grapes.compare.run_one`: a stop swallowed
    between two runs is raised before the next one trains (or is loaded for a resume)."""
    from imc_grapes import compare

    trained: list[TrainConfig] = []

    def trainer(cfg: TrainConfig, run_dir: Path, **_kwargs: object) -> T.RunResult:
        trained.append(cfg)
        return T.RunResult(cfg, [], "completed", "", run_dir)

    with sigterm_as_interrupt():
        assert swallow(signal.SIGTERM) == [Terminated]
        with pytest.raises(Terminated):
            compare.run_one(TrainConfig(**TINY), tmp_path / "run", None, False, True, lambda _m: None,
                            trainer=trainer)
        compare.run_one(TrainConfig(**TINY), tmp_path / "run", None, False, True, lambda _m: None, trainer=trainer)
    assert len(trained) == 1


def test_a_sweep_starts_each_point_at_a_safe_point(tmp_path, one_torch_thread):
    """A stop swallowed while the sweep process records a point's result is raised before the next point starts
    (before: the next point was started, and stopped by the training loop's safe point, or with workers the sweep
    waited for their points): the first point is kept, the others are left to the next run."""
    from imc_grapes.sweep import LocalExecutor, load_spec, run_sweep

    spec_path = write_spec(tmp_path, "[axes]\nseed = [0, 1, 2]\n")     # the tiny base; out = tmp_path/out

    class SwallowingAtFirstResult:
        """Runs the points in this process; the first result is recorded while a stop is swallowed."""

        name, ships_files = "local", False

        def run(self, tasks, on_start, on_result):
            def recording(task, outcome):
                if not swallowed:
                    swallowed.extend(swallow(signal.SIGTERM))
                on_result(task, outcome)

            def starting(task):
                on_start(task)
                started.append(task["id"])

            LocalExecutor(jobs=1).run(tasks, starting, recording)

    swallowed: list[type[BaseException]] = []
    started: list[str] = []
    with sigterm_as_interrupt():
        with pytest.raises(Terminated):
            run_sweep(load_spec(spec_path), executor=SwallowingAtFirstResult(), log=lambda _m: None)
    assert swallowed == [Terminated] and len(started) == 1      # the second point was not started
    done = [json.loads(p.read_text())["status"] for p in (tmp_path / "out" / "points").glob("*/point.json")]
    assert done == ["done"]


def test_a_stop_swallowed_during_replica_training_stops_every_replica_within_a_batch(tmp_path, monkeypatch,
                                                                                       one_torch_thread):
    """5 batches per epoch, evaluated after 2 and 5: the stop swallowed in step 3 is raised before step 4, both
    replicas are recorded interrupted with the row of step 2, and nothing is raised again afterwards."""
    import imc_grapes.replicas as replicas

    real, calls, seen = replicas._train_step, [0], []

    def step(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 3:
            seen.extend(swallow(signal.SIGTERM))
        return real(*args, **kwargs)

    monkeypatch.setattr(replicas, "_train_step", step)
    cfgs = [TrainConfig(dataset="synthetic", backend="crossbar", hidden=(24,), batch_size=32, train_subset=160,
                        test_subset=64, evals_per_epoch=2, lr=0.05, epochs=2, analog={"tile_size": 16}, seed=s)
            for s in (1, 2)]
    with sigterm_as_interrupt():
        with pytest.raises(Terminated):
            replicas.train_replicas(cfgs, [tmp_path / "a", tmp_path / "b"], progress=False, log=lambda _m: None)
        nothing_raised()
    assert seen == [Terminated] and calls[0] == 3
    for name in ("a", "b"):
        res = json.loads((tmp_path / name / "results.json").read_text())
        assert res["status"] == "interrupted" and res["message"] == "interrupted (Terminated)"
        assert [h["step"] for h in res["history"]] == [2]


def test_a_stop_swallowed_during_an_evaluation_is_raised_before_its_next_batch(one_torch_thread):
    """An evaluation of 4 batches whose first forward pass swallows a SIGTERM: it is raised before the second batch
    (an evaluation of a large test set on a simulated crossbar can take minutes), the model is left in the mode it
    was in, and nothing is raised again afterwards."""
    import torch

    from imc_grapes.data import Split

    calls, seen = [0], []

    class Stopping(torch.nn.Linear):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            calls[0] += 1
            if calls[0] == 1:
                seen.extend(swallow(signal.SIGTERM))
            return super().forward(x.flatten(1))

    model = Stopping(4, 3)
    split = Split(torch.randn(40, 1, 2, 2), torch.randint(0, 3, (40,)))
    with sigterm_as_interrupt():
        with pytest.raises(Terminated):
            T.evaluate(model, split, batch_size=10)
        nothing_raised()
    assert seen == [Terminated] and calls[0] == 1 and model.training
    assert T.evaluate(model, split, batch_size=10)[1] >= 0 and calls[0] == 5       # all 4 batches without a stop


def test_a_stop_swallowed_during_the_drift_evaluation_is_raised_before_the_next_time():
    """The accuracy after drift at 3 times whose first evaluation swallows a SIGTERM: it is raised before the
    second time's weights are written, and the trained weights are written back."""
    import torch

    from imc_grapes.inference_eval import accuracy_after_drift

    trained = {"w": torch.ones(4, 4)}
    written: list[torch.Tensor] = []
    calls, seen = [0], []

    def evaluate() -> float:
        calls[0] += 1
        seen.extend(swallow(signal.SIGTERM))
        return 0.5

    with sigterm_as_interrupt():
        with pytest.raises(Terminated):
            accuracy_after_drift(lambda: trained, lambda w: written.append(w["w"]), evaluate, [1, 3600, 86400])
        nothing_raised()
    assert seen == [Terminated] and calls[0] == 1
    assert len(written) == 2 and torch.equal(written[-1], trained["w"])     # time 1's weights, then the trained
