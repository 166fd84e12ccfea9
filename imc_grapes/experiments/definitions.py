"""The paper's experiments as named plans: each turns :class:`ExperimentOptions` into a list of
:class:`~imc_grapes.experiments.groups.Group` (one compare job per data set × network variant × hardware).

=============  ======================================================================================
``mlp``        784-256-256-10 (bias-free, ReLU, He-uniform) on MNIST and Fashion-MNIST, BP vs BP+GRAPES,
               with deeper (3, 5 hidden layers) and wider (1000 units) variants, at the full size digitally also
               784-1000-1000-1000-10 and 784-2000-1500-1000-500-10: "helps more as networks grow"
``fa-dfa``     the same MLP trained with feedback alignment and direct feedback alignment, with and without GRAPES
``cnn``        a small conv net (conv-pool ×2, linear classifier), GRAPES per output channel; analog convs
``rnn``        sequential (row-by-row) MNIST, LSTM and vanilla RNN; GRAPES per unit from the input weights
``snn``        SNU / soft sSNU layers on rate- or latency-coded MNIST (BPTT), GRAPES per unit from ``W``
``forgetting`` permuted MNIST, 5 tasks, 784-256-256-10 bias-free, SGD lr 0.001 momentum 0.9, batch 64, 1 epoch
               per task: accuracy matrix, average accuracy, forgetting
=============  ======================================================================================

Every group compares the chosen optimizers (default SGD, GRAPES and the layer-mean control), each with its
learning rate tuned over a grid on a validation split, then run with several seeds (same seeds: same initial
weights and data order for every optimizer).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..backends.settings import format_device_overrides
from ..compare import CompareSpec
from ..config import ConfigError, TrainConfig
from ..suggest import did_you_mean
from .groups import Group
from .models import describe_model
from .options import DEFAULT_PRESET, ExperimentOptions, budget_for

__all__ = ["EXPERIMENTS", "Experiment", "plan_experiment"]

#: accuracy (fraction) for the "epochs to target" column, per data set
TARGETS: dict[str, float] = {"mnist": 0.95, "fashion-mnist": 0.8, "synthetic": 0.5}
_DATA = ("mnist", "fashion-mnist")


@dataclass(frozen=True)
class Experiment:
    """A named experiment: what it tests (the paper's claim) and how it is planned.

    ``title`` and ``notes`` describe the experiment at its default (``full``) size; an experiment whose title or
    notes name settings that the options change (task count, network, epochs, batch) has ``describe``, which gives
    them for the options at hand (:meth:`texts_for`)."""

    name: str
    title: str
    claim: str
    plan: Callable[[ExperimentOptions], list[Group]]
    notes: str = ""
    describe: Callable[[ExperimentOptions], tuple[str, str]] | None = None

    def texts_for(self, options: ExperimentOptions) -> tuple[str, str]:
        """The title and notes under ``options`` (``describe``'s where there is one, which plans the groups once,
        else ``title`` and ``notes``)."""
        return self.describe(options) if self.describe is not None else (self.title, self.notes)


def _hw(backend: str) -> str:
    return "digital" if backend == "digital" else "analog"


def _hw_label(backend: str, opts: ExperimentOptions) -> str:
    if backend == "digital":
        return "digital"
    changed = format_device_overrides(opts.device_overrides)
    return f"{backend} {opts.preset}" + (f" ({changed})" if changed else "")


def _grid(opts: ExperimentOptions, backend: str, grids: dict[str, tuple[float, ...]]) -> tuple[float, ...]:
    if opts.lr_grid is not None:
        return opts.lr_grid
    if opts.size == "tiny":
        return grids.get("tiny", (0.1,))
    return grids[_hw(backend)]


def _group(opts: ExperimentOptions, backend: str, dataset: str, variant: str, labels: dict[str, Any],
           model_kw: dict[str, Any], grids: dict[str, tuple[float, ...]], budget: dict[str, dict[str, Any]],
           trainer: str = "standard", tune_score: str = "final", size: float | None = None) -> Group:
    hw = _hw(backend)
    b = budget_for(opts, hw, **budget.get(hw, {}))
    lr_grid = _grid(opts, backend, grids)
    base = TrainConfig(dataset=dataset, data_root=opts.data_root, device=opts.device, batch_size=b.batch_size,
                       drop_last=opts.drop_last, epochs=b.epochs, evals_per_epoch=b.evals_per_epoch,
                       train_subset=b.train_subset, test_subset=b.test_subset, analog=opts.analog, **model_kw)
    spec = CompareSpec(base=base, optimizers=opts.optimizers, hardware=(hw,),
                       analog_backend=backend if hw == "analog" else "crossbar", lr_grid=lr_grid,
                       val_holdout=b.val_holdout, seeds=b.seeds, target_acc=TARGETS.get(dataset, 0.9),
                       tune_score=tune_score, tail_evals=opts.tail_evals)
    all_labels = {"dataset": dataset, **labels, "hardware": _hw_label(backend, opts)}
    return Group(group_key(opts, backend, dataset, variant), all_labels, spec, trainer, size)


def group_key(opts: ExperimentOptions, backend: str, dataset: str, variant: str) -> str:
    """A group's folder name, ``<dataset>-<variant>-<backend>``, and for an analog backend with a device preset
    other than :data:`~imc_grapes.experiments.options.DEFAULT_PRESET` ``-<preset>`` (``mnist-mlp256x2-crossbar-EcRam``),
    so that two presets' analog groups in one output folder do not overwrite each other while the folders of the
    default preset keep the names of earlier versions (and resume). A digital group's runs do not depend on the
    preset: one folder for every preset.

    Device overrides (``opts.device_overrides``, ``--device-param``) add the preset, whichever it is, and each
    field's value, sorted by field, the full float (``repr``) so that two values never share a folder:
    ``mnist-mlp256x2-crossbar-ReRamSB-dw_min=0.008-up_down=0.2``; a resumed run then never mixes devices."""
    key = f"{dataset}-{variant}-{backend}"
    if _hw(backend) == "digital":
        return key
    if opts.device_overrides:
        fields = "-".join(f"{k}={_override_text(v)}" for k, v in sorted(opts.device_overrides.items()))
        return f"{key}-{opts.preset}-{fields}"
    return key if opts.preset == DEFAULT_PRESET else f"{key}-{opts.preset}"


def _override_text(value: float | bool) -> str:
    """A device override's value in a folder name: ``true`` / ``false``, or the float's ``repr`` (``0.008``,
    ``2.0``, ``1e-05``: an int and its float give the same name, as they give the same device)."""
    return str(value).lower() if isinstance(value, bool) else repr(float(value))


def _mlp_weights(sizes: tuple[int, ...]) -> int:
    return sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))


def _net(hidden: tuple[int, ...], n_in: int = 784, n_out: int = 10) -> str:
    return "-".join(str(s) for s in (n_in, *hidden, n_out))


def _variant(hidden: tuple[int, ...]) -> str:
    widths = sorted(set(hidden))
    return f"mlp{hidden[0]}x{len(hidden)}" if len(widths) == 1 else "mlp" + "-".join(map(str, hidden))


# ----------------------------------------------------------------------------------------------- mlp
_MLP_VARIANTS: dict[str, dict[str, list[tuple[int, ...]]]] = {
    "tiny": {"digital": [(16,), (16, 16, 16)], "analog": [(16,)]},
    "quick": {"digital": [(256, 256), (256, 256, 256), (256,) * 5, (1000, 1000)],
              "analog": [(256, 256), (256, 256, 256)]},
    "full": {"digital": [(256, 256), (256, 256, 256), (256,) * 5, (1000, 1000), (1000,) * 3,
                         (2000, 1500, 1000, 500)],
             "analog": [(256, 256), (256, 256, 256), (256,) * 5, (1000, 1000)]},
}
GRID = (0.0125, 0.025, 0.05, 0.1, 0.2, 0.4)  # factor-2 steps: GRAPES's M ≈ 1.8–1.9 at init acts like a ~2× lr
ANALOG_GRID = (0.025, 0.05, 0.1, 0.2, 0.4, 0.8)  # pulsed updates: larger steps than digital SGD
_MLP_GRIDS = {"tiny": (0.05, 0.2), "digital": GRID, "analog": ANALOG_GRID}


def plan_mlp(opts: ExperimentOptions) -> list[Group]:
    groups = []
    for backend in opts.backends:
        data = opts.datasets_or(_DATA if _hw(backend) == "digital" else ("mnist",))
        for dataset in data:
            for hidden in _MLP_VARIANTS[opts.size][_hw(backend)]:
                sizes = (784, *hidden, 10)
                groups.append(_group(
                    opts, backend, dataset, _variant(hidden),
                    {"network": _net(hidden), "hidden layers": len(hidden), "weights": _mlp_weights(sizes)},
                    {"model": "mlp", "hidden": hidden, "dropout": 0.1 if opts.size == "full" else 0.0},
                    _MLP_GRIDS, {}, size=float(_mlp_weights(sizes))))
    return groups


# ----------------------------------------------------------------------------------------------- fa-dfa
_FA_GRIDS = {"tiny": (0.1,), "digital": GRID, "analog": ANALOG_GRID}


def plan_fa_dfa(opts: ExperimentOptions) -> list[Group]:
    # two hidden layers also at tiny: DFA leaves the first hidden layer unmodulated, so with one the optimizers
    # would train the same network
    hidden = (16, 16) if opts.size == "tiny" else (256, 256)
    groups = []
    for backend in opts.backends:
        data = opts.datasets_or(_DATA if _hw(backend) == "digital" else ("mnist",))
        for dataset in data:
            for rule in ("fa", "dfa"):
                groups.append(_group(opts, backend, dataset, f"{rule}-{_variant(hidden)}",
                                     {"rule": rule.upper(), "network": _net(hidden)},
                                     {"model": "mlp", "hidden": hidden, "rule": rule,
                                      "dropout": 0.1 if opts.size == "full" else 0.0}, _FA_GRIDS, {}))
    return groups


# ----------------------------------------------------------------------------------------------- cnn
_CNN_CHANNELS: dict[str, dict[str, list[tuple[int, ...]]]] = {"tiny": {"digital": [(4, 8)], "analog": [(4,)]},
                 "quick": {"digital": [(16, 32)], "analog": [(8, 16)]},
                 "full": {"digital": [(16, 32), (32, 64)], "analog": [(16, 32)]}}
_CNN_GRIDS = {"tiny": (0.05,), "digital": GRID, "analog": ANALOG_GRID}
_CNN_BUDGET = {"digital": {"train_subset": 10000, "test_subset": 2000},
               "analog": {"train_subset": 2000, "test_subset": 1000, "val_holdout": 1000}}


def plan_cnn(opts: ExperimentOptions) -> list[Group]:
    groups = []
    for backend in opts.backends:
        data = opts.datasets_or(_DATA if _hw(backend) == "digital" else ("mnist",))
        budget = _CNN_BUDGET if opts.size == "quick" else {}
        for dataset in data:
            for ch in _CNN_CHANNELS[opts.size][_hw(backend)]:
                net = "conv" + "-".join(map(str, ch)) + "-pool-fc"
                groups.append(_group(opts, backend, dataset, "cnn" + "-".join(map(str, ch)),
                                     {"network": net}, {"model": "cnn", "hidden": ch}, _CNN_GRIDS, budget))
    return groups


# ----------------------------------------------------------------------------------------------- rnn
_RNN_MODELS: dict[str, dict[str, list[tuple[str, tuple[int, ...]]]]] = {
               "tiny": {"digital": [("lstm", (8,)), ("rnn", (8,))], "analog": [("lstm", (8,))]},
               "quick": {"digital": [("lstm", (64,)), ("lstm", (64, 64)), ("rnn", (128,))],
                         "analog": [("lstm", (32,))]},
               "full": {"digital": [("lstm", (128,)), ("lstm", (128, 128)), ("rnn", (128,))],
                        "analog": [("lstm", (64,)), ("lstm", (64, 64))]}}
BIG_GRID = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)  # LSTM and SNN train best at larger SGD steps
_RNN_GRIDS = {"lstm": {"tiny": (0.3,), "digital": BIG_GRID, "analog": BIG_GRID},
              "rnn": {"tiny": (0.1,), "digital": GRID, "analog": ANALOG_GRID}}
_SEQ_BUDGET = {"quick": {"digital": {"train_subset": 10000, "test_subset": 2000}},
               "full": {"digital": {"epochs": 10}, "analog": {"epochs": 3}}}


def plan_rnn(opts: ExperimentOptions) -> list[Group]:
    groups = []
    for backend in opts.backends:
        for dataset in opts.datasets_or(("mnist",)):
            for kind, hidden in _RNN_MODELS[opts.size][_hw(backend)]:
                model = {"kind": kind, "hidden": list(hidden)}
                groups.append(_group(opts, backend, dataset, f"{kind}{'-'.join(map(str, hidden))}",
                                     {"network": describe_model(model) + " → 10"},
                                     {"hidden": hidden, "extra": {"model": model}}, _RNN_GRIDS[kind],
                                     _SEQ_BUDGET.get(opts.size, {}), trainer="custom"))
    return groups


# ----------------------------------------------------------------------------------------------- snn
_SNN_MODELS: dict[str, dict[str, list[tuple[str, tuple[int, ...], str]]]] = {
               "tiny": {"digital": [("snu", (16,), "rate"), ("ssnu", (16,), "latency")],
                        "analog": [("snu", (16,), "rate")]},
               "quick": {"digital": [("snu", (256,), "rate"), ("ssnu", (256,), "rate"), ("snu", (256,), "latency"),
                                     ("snu", (256, 256), "rate")],
                         "analog": [("snu", (128,), "rate")]},
               "full": {"digital": [("snu", (256,), "rate"), ("ssnu", (256,), "rate"), ("snu", (256,), "latency"),
                                    ("ssnu", (256,), "latency"), ("snu", (256, 256), "rate")],
                        "analog": [("snu", (256,), "rate"), ("ssnu", (256,), "rate")]}}
_SNN_GRIDS = {"tiny": (0.3,), "digital": BIG_GRID, "analog": BIG_GRID}
SNN_STEPS = {"tiny": 4, "quick": 16, "full": 20}


def plan_snn(opts: ExperimentOptions) -> list[Group]:
    groups = []
    steps = SNN_STEPS[opts.size]
    for backend in opts.backends:
        for dataset in opts.datasets_or(("mnist",)):
            for kind, hidden, enc in _SNN_MODELS[opts.size][_hw(backend)]:
                model = {"kind": kind, "hidden": list(hidden), "steps": steps, "encoding": enc}
                groups.append(_group(opts, backend, dataset, f"{kind}{'-'.join(map(str, hidden))}-{enc}",
                                     {"network": describe_model(model) + " → 10", "coding": enc},
                                     {"hidden": hidden, "extra": {"model": model}}, _SNN_GRIDS,
                                     _SEQ_BUDGET.get(opts.size, {}), trainer="custom"))
    return groups


# ----------------------------------------------------------------------------------------------- forgetting
_FORGET_GRIDS = {"tiny": (0.01,), "digital": (0.0005, 0.001, 0.002, 0.004, 0.008, 0.016),
                 "analog": (0.00625, 0.0125, 0.025, 0.05, 0.1, 0.2)}
_FORGET_BUDGET = {"quick": {"digital": {"epochs": 1, "evals_per_epoch": 1},
                            "analog": {"epochs": 1, "evals_per_epoch": 1}},
                  "full": {"digital": {"epochs": 1}, "analog": {"epochs": 1}}}
N_TASKS = 5


def plan_forgetting(opts: ExperimentOptions) -> list[Group]:
    if opts.tail_evals != 1:
        raise ConfigError(f"tail_evals must be 1 for forgetting: its evaluation rows are one per task, so a mean "
                          f"over the last {opts.tail_evals} would mix tasks")
    hidden = (16, 16) if opts.size == "tiny" else (256, 256)
    groups = []
    n_tasks = 3 if opts.size == "tiny" else N_TASKS
    for backend in opts.backends:
        for dataset in opts.datasets_or(("mnist",)):
            groups.append(_group(
                opts, backend, dataset, f"permuted{n_tasks}-{_variant(hidden)}",
                {"network": _net(hidden), "tasks": n_tasks},
                {"model": "mlp", "hidden": hidden, "momentum": 0.9,
                 "extra": {"tasks": n_tasks, "permutation_seed": 0}},
                _FORGET_GRIDS, _FORGET_BUDGET.get(opts.size, {}), trainer="permuted"))
    return groups


_DATA_NAMES = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST", "synthetic": "synthetic data"}


def _values(groups: list[Group], f: Callable[[Group], Any]) -> str:
    """The distinct values ``f`` gives over ``groups``, in their order, as ``a / b`` (a title's or notes' text)."""
    return " / ".join(dict.fromkeys(str(f(g)) for g in groups))


def _data_names(groups: list[Group]) -> str:
    """The data sets of ``groups`` as a text names them (:data:`_DATA_NAMES`): ``MNIST / Fashion-MNIST``."""
    return _values(groups, lambda g: _DATA_NAMES.get(g.spec.base.dataset, g.spec.base.dataset))


def describe_forgetting(opts: ExperimentOptions) -> tuple[str, str]:
    """The forgetting experiment's title and notes under ``opts``, read off its planned groups (data set, task
    count, network, batch, epochs per task, lr grid: ``--tiny`` and ``--epochs`` change them)."""
    groups = plan_forgetting(opts)

    def values(f: Callable[[Group], Any]) -> str:
        return _values(groups, f)

    data = _data_names(groups)
    tasks, epochs = values(lambda g: g.spec.base.extra["tasks"]), values(lambda g: g.spec.base.epochs)
    per_task = f"{epochs} epoch{'' if epochs == '1' else 's'}"
    title = f"Catastrophic forgetting on permuted {data} ({tasks} tasks, {per_task} each)"
    grids = [g.spec.lr_grid for g in groups]
    in_grid = any(0.001 in g.spec.lr_grid for g in groups if g.hardware == "digital")
    lr = (f"One lr for every optimizer, {values(lambda g: g.spec.lr_grid[0])} (no tuning; the paper used 0.001)"
          if all(len(grid) == 1 for grid in grids) else
          "The lr is tuned on the final average validation accuracy over all tasks (the paper used lr 0.001 for "
          "every optimizer" + ("; it is in the digital grid)" if in_grid else ")"))
    notes = (f"{values(lambda g: g.labels['network'])} bias-free, SGD momentum 0.9 (analog weights: pulsed SGD "
             f"without momentum), batch {values(lambda g: g.spec.base.batch_size)}, {per_task} per task; task 0 is "
             f"the unpermuted data set. {lr}.")
    return title, notes


def _planned_data(plan: Callable[[ExperimentOptions], list[Group]], title: str, notes: str,
                  data: str = "MNIST / Fashion-MNIST") -> Callable[[ExperimentOptions], tuple[str, str]]:
    """An :attr:`Experiment.describe` for an experiment whose ``title`` / ``notes`` (its full size) name its data sets
    as ``data`` and may say ``batch 64, as the reference code``: both read off the groups ``plan`` makes under the
    options at hand (``--tiny``: synthetic data, batch 32; ``--datasets``: the data sets chosen), so a report never
    names data or a batch its runs did not use. At the full size the title and notes are ``title`` and ``notes``."""
    def describe(opts: ExperimentOptions) -> tuple[str, str]:
        groups = plan(opts)
        names, batches = _data_names(groups), _values(groups, lambda g: g.spec.base.batch_size)
        batch = "batch 64, as the reference code" if batches == "64" else f"batch {batches} (the reference code: 64)"
        return (title.replace(data, names),
                notes.replace(data, names).replace("batch 64, as the reference code", batch))
    return describe


#: what the MLP groups (mlp, fa-dfa) keep from the paper's reference setting (grapes.md §6) and where they differ
_MLP_NOTES = ("Hidden layers ReLU, He-uniform, bias-free, plain SGD, batch 64, as the reference code; dropout 10 % "
              "(the reference's keep 0.9) at the full size only, none at --quick and --tiny; with dropout, GRAPES's "
              "F comes from the whole weights (the reference masks them with the batch's first dropout mask, "
              "imc_grapes/grapes/hooks.py). The paper trained 200 epochs and averaged 10 runs: the budgets here are "
              "smaller (each group's epochs and seeds are listed below). Inputs are standardised with the training "
              "set's pixel mean and std (the reference code scales pixels to [0, 1]). The paper's EMNIST, CIFAR-10 "
              "and tanh variants are not run.")

_TITLES_NOTES: dict[str, tuple[str, str]] = {       # at the full size; _planned_data gives them for other options
    "mlp": ("MLP on MNIST / Fashion-MNIST: BP vs BP+GRAPES, depth and width variants", _MLP_NOTES),
    "fa-dfa": ("Feedback alignment (FA) and direct feedback alignment (DFA), with and without GRAPES",
               "FA: M = 2F/max F unclipped; DFA: per-synapse P^{l+1}_i P^l_j from outgoing column sums, first hidden "
               "layer unmodulated (grapes.md §3). " + _MLP_NOTES),
    "cnn": ("Small CNN with per-channel GRAPES",
            "The paper's CNN was a ResNet-9-like net on CIFAR-10 with Adam; here a 2-block conv net on "
            "MNIST / Fashion-MNIST with SGD (the analog layers train with pulsed SGD anyway). Analog backends "
            "convert the conv layers to analog conv layers."),
    "rnn": ("Sequential (row-by-row) MNIST with an LSTM or a vanilla RNN",
            "GRAPES per unit from the row sums of the input-to-hidden matrix W (LSTM: per gate row), applied to "
            "the error of the input branch at every time step; the recurrent weights U do not enter F and their "
            "updates and the error through time are plain BPTT (see imc_grapes/recurrent.py). On the analog "
            "backends W, U and the readout are analog layers (W on all time steps' inputs at once, U once per "
            "step; one pulsed update per batch with every step's (x, d)); biases are digital."),
    "snn": ("Spiking network of SNUs / sSNUs on rate- or latency-coded MNIST (BPTT)",
            "SNU: s_t = ReLU(W x_t + l ⊙ s_{t-1} ⊙ (1 − y_{t-1})), y_t = step(s_t + b) with a "
            "sigmoid-derivative surrogate gradient, or σ(s_t + b) for the sSNU; l = 0.8, b initialised to −1 "
            "(trainable, digital); a bias-free linear readout of the last layer's spike rate. GRAPES per unit "
            "from the row sums of W."),
}


def _experiment(name: str, claim: str, plan: Callable[[ExperimentOptions], list[Group]],
                data: str = "MNIST / Fashion-MNIST") -> Experiment:
    """An experiment of :data:`_TITLES_NOTES` whose title and notes name the data sets and batch it ran
    (:func:`_planned_data`)."""
    title, notes = _TITLES_NOTES[name]
    return Experiment(name, title, claim, plan, notes, _planned_data(plan, title, notes, data))


EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in (
    _experiment("mlp", "GRAPES converges faster and reaches a higher test accuracy than SGD, and helps more as "
                       "networks grow", plan_mlp),
    _experiment("fa-dfa", "GRAPES improves FA and DFA", plan_fa_dfa),
    _experiment("cnn", "GRAPES helps convolutional networks", plan_cnn),
    _experiment("rnn", "GRAPES helps recurrent networks", plan_rnn, data="MNIST"),
    _experiment("snn", "GRAPES helps spiking networks", plan_snn, data="MNIST"),
    Experiment("forgetting", "Catastrophic forgetting on permuted MNIST (5 tasks, 1 epoch each)",
               "GRAPES mitigates catastrophic forgetting", plan_forgetting,
               "784-256-256-10 bias-free, SGD momentum 0.9 (analog weights: pulsed SGD without momentum), batch "
               "64, 1 epoch per task; task 0 is the unpermuted data set. The lr is tuned on the final average "
               "validation accuracy over all tasks (the paper used lr 0.001 for every optimizer; it is in the "
               "digital grid).", describe_forgetting),
)}


def plan_experiment(name: str, options: ExperimentOptions) -> list[Group]:
    """The groups of experiment ``name`` under ``options``."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; valid: {', '.join(EXPERIMENTS)}"
                         f"{did_you_mean(name, EXPERIMENTS)}")
    groups = EXPERIMENTS[name].plan(options)
    if not groups:
        raise ValueError(f"experiment {name!r} has no groups for {options}")
    keys = [g.key for g in groups]
    if len(set(keys)) != len(keys):
        raise ValueError(f"experiment {name!r}: duplicate group keys {keys}")
    return groups
