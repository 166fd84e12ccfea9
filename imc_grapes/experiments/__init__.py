"""The paper's experiments as named, runnable experiments (``imc-grapes experiment NAME``).

* :data:`EXPERIMENTS`: ``mlp``, ``fa-dfa``, ``cnn``, ``rnn``, ``snn``, ``forgetting`` (:mod:`.definitions`);
* :class:`ExperimentOptions`: size (``tiny`` / ``quick`` / ``full``), backends, device preset, optimizers, seeds,
  lr grid, data sets (:mod:`.options`);
* :func:`run_experiment`: plan, run (resumable) and write the report folder (:mod:`.runner`, :mod:`.report`);
* :func:`~.redraw.redraw_experiment_report`: a report's figures again from its ``results.json`` alone
  (``imc-grapes experiment --redraw``, :mod:`.redraw`);
* :class:`Group` / :func:`run_group`: one compare job with any trainer (:mod:`.groups`);
* trainers: :func:`train_custom` (recurrent / spiking models, :mod:`.models`), :func:`train_permuted`
  (permuted-MNIST continual learning) with :func:`forgetting_metrics` (:mod:`.forgetting`).
"""
from .definitions import EXPERIMENTS, Experiment, plan_experiment
from .forgetting import forgetting_metrics, permute, task_permutations, train_permuted
from .groups import TRAINERS, Group, GroupResult, run_group, run_one
from .models import CUSTOM_MODELS, build_custom_model, custom_network, describe_model
from .options import SIZES, Budget, ExperimentOptions, budget_for
from .report import machine_info, paired, write_experiment_report
from .runner import default_out_dir, run_experiment
from .trainers import train_custom

__all__ = [
    "CUSTOM_MODELS", "EXPERIMENTS", "SIZES", "TRAINERS", "Budget", "Experiment", "ExperimentOptions", "Group",
    "GroupResult", "budget_for", "build_custom_model", "custom_network", "default_out_dir", "describe_model",
    "forgetting_metrics", "machine_info", "paired", "permute", "plan_experiment", "run_experiment", "run_group",
    "run_one", "task_permutations", "train_custom", "train_permuted", "write_experiment_report",
]
