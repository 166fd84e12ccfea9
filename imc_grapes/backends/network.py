"""A trainable network on one backend: the model, GRAPES attached, the optimizer(s), diagnostics and costs.

:func:`build_network` builds ``cfg.model`` digitally with :func:`~imc_grapes.models.build_model` (so every
backend starts from the same initial weights for the same seed) and, for the analog backends, replaces every
weight layer (``nn.Linear``, ``nn.Conv2d``, ``FALinear``) by an :class:`~imc_grapes.backends.layers.AnalogLayer`
programmed with those weights (clipped into the device bounds). The train loop is::

    net.zero_grad(); loss = F.cross_entropy(net.model(x), y); loss.backward(); net.step()

:meth:`Network.step` applies the digital optimizer (``make_optimizer(cfg, digital params)``; only the
digital biases on the analog backends) and the pulsed in-memory SGD of every analog layer with
``lr = cfg.lr`` (the base optimizer's momentum / Adam state do not apply to analog weights). Only
*training* steps are counted: a window opens at the first forward with grad enabled and closes at ``step()``;
evaluation forwards, under ``torch.no_grad()`` (as :func:`~imc_grapes.train.evaluate` runs them), are not in any
window. The module mode plays no part: a model trained in ``eval()`` mode (e.g. to switch dropout off) does the
same array, update and GRAPES scaling work, and it is counted alike. (GRAPES's importance refresh is its own
decision — it refreshes on training-mode forwards only, :mod:`imc_grapes.grapes.hooks` — and is counted when it
happens.)

The GRAPES importance refresh (``cfg.analog.importance_every``) and the importance source apply to the
analog backends; the digital backend refreshes every batch from the float weights, as ``train.py`` does.
"""
from __future__ import annotations

import contextlib
import copy
import functools
from collections.abc import Iterator, Mapping
from typing import Any, TypeAlias, cast

import torch
from torch import Tensor, nn

import crossbar

from ..grapes import BP_CLIP, GrapesHandle, attach_grapes
from ..grapes.feedback import DFAFeedback, FALinear
from ..models import build_model
from ..suggest import did_you_mean, did_you_mean_each
from .costs import (COST_KINDS, energy_breakdown, grapes_refresh_ops, load_energy_table, ops_total,
                    summary_table)
from .hardware import crossbar_config_from
from .importance import ImportanceSource, MeanMeter
from .layers import AnalogLayer, CrossbarLayer
from .optim import make_optimizer

__all__ = ["Network", "build_network", "layer_seed"]

_K = {name: i for i, name in enumerate(COST_KINDS)}
_WEIGHTED = (nn.Linear, nn.Conv2d, FALinear)
_WeightLayer: TypeAlias = "nn.Linear | nn.Conv2d | FALinear"
"""The digital weight layers (``_WEIGHTED``) that the analog backends replace."""
_Pair: TypeAlias = "tuple[int, int]"
BACKENDS = ("digital", "crossbar", "aihwkit")


def layer_seed(seed: int, index: int) -> int:
    """Seed of the ``index``-th analog layer of a run with seed ``seed`` (deterministic, distinct per layer)."""
    return (int(seed) * 1_000_003 + 7919 * (index + 1)) % (2 ** 62)


def _weighted_layers(model: nn.Module) -> list[tuple[str, _WeightLayer]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, _WEIGHTED)]


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` in place of the submodule of ``model`` at the dotted path ``name`` (``layers.0``)."""
    parent = model
    *path, last = name.split(".")
    for part in path:
        parent = getattr(parent, part)
    setattr(parent, last, new)


def _backward_mode(layer: nn.Module, rule: str) -> str:
    if isinstance(layer, FALinear):
        return "feedback"
    return "zeros" if rule == "dfa" else "array"


def _make_crossbar_layer(layer: _WeightLayer, config: crossbar.CrossbarConfig, seed: int, mode: str,
                         device: torch.device) -> CrossbarLayer:
    bias = getattr(layer, "bias", None)
    inner: crossbar.AnalogModuleBase
    if isinstance(layer, nn.Conv2d):
        if layer.groups != 1 or layer.padding_mode != "zeros":
            raise ValueError("crossbar backend: only Conv2d with groups=1 and zero padding is supported")
        # nn.Conv2d stores these as pairs (torch annotates them tuple[int, ...]), its padding also as 'valid'/'same'
        padding = layer.padding if isinstance(layer.padding, str) else cast(_Pair, layer.padding)
        inner = crossbar.AnalogConv2d(layer.in_channels, layer.out_channels, cast(_Pair, layer.kernel_size),
                                      stride=cast(_Pair, layer.stride), padding=padding,
                                      dilation=cast(_Pair, layer.dilation), bias=bias is not None,
                                      rpu_config=config, device=device, seed=seed)
    else:
        inner = crossbar.AnalogLinear(layer.in_features, layer.out_features, bias=bias is not None,
                                      rpu_config=config, device=device, seed=seed)
    inner.set_weights(layer.weight.detach().to(device=device, dtype=inner.tile.weight_tiles.dtype))
    if bias is not None:
        with torch.no_grad():
            inner.bias.copy_(bias.detach())
    fb = cast(Tensor, layer.feedback) if mode == "feedback" else None   # mode "feedback": an FALinear
    return CrossbarLayer(inner, mode, fb)


def build_network(cfg: Any, input_shape: tuple[int, ...], n_classes: int,
                  device: torch.device | str) -> "Network":
    """Build ``cfg.model`` on ``cfg.backend`` with GRAPES (``cfg.grapes_mode``) and the optimizer(s).

    Args:
        cfg: a :class:`~imc_grapes.config.TrainConfig`.
        input_shape: one sample's shape, e.g. ``(1, 28, 28)``.
        n_classes: output width.
        device: where the model lives (the aihwkit backend: CPU only).

    Raises:
        ValueError: aihwkit on a non-CPU device, aihwkit with ``importance='array'``, an unknown backend, a
            network whose weights cannot fit in the device's memory (:func:`~imc_grapes.capacity.check_model_fits`).
    """
    device = torch.device(device)
    backend = cfg.backend
    if backend not in BACKENDS:
        raise ValueError(f"build_network: backend must be one of {', '.join(BACKENDS)}, got {backend!r}"
                         f"{did_you_mean(backend, BACKENDS)}")
    settings = cfg.analog
    if backend == "aihwkit":
        from .aihwkit_backend import check_aihwkit_device

        check_aihwkit_device(device)
        if cfg.grapes_mode and settings.importance != "exact":
            raise ValueError(
                f"analog.importance={settings.importance!r} is implemented for the crossbar backend only: an "
                "all-ones read of an aihwkit tile gives the signed row sum Σw of one signed array, not the "
                "differential-pair sum Σ(G⁺+G⁻); use analog.importance='exact' with aihwkit")
    from ..capacity import check_model_fits   # (imported here: imc_grapes.config imports this package)

    check_model_fits(cfg, input_shape, n_classes, device)
    model = build_model(cfg.model, input_shape=tuple(input_shape), n_classes=n_classes, hidden=list(cfg.hidden),
                        activation=cfg.activation, dropout=cfg.dropout, rule=cfg.rule, seed=cfg.seed)
    analog: dict[str, AnalogLayer] = {}
    if backend != "digital":
        xcfg = crossbar_config_from(settings)
        for k, (name, layer) in enumerate(_weighted_layers(model)):
            mode = _backward_mode(layer, cfg.rule)
            seed = layer_seed(cfg.seed, k)
            if backend == "crossbar":
                new: AnalogLayer = _make_crossbar_layer(layer, xcfg, seed, mode, device)
            else:
                from .aihwkit_backend import make_aihwkit_layer

                new = make_aihwkit_layer(layer, xcfg, seed, mode,
                                         cast(Tensor, layer.feedback) if mode == "feedback" else None)
            _replace(model, name, new)
            analog[name] = new
    model.to(device)
    return Network(cfg, model, analog, device)


class Network:
    """A model on one backend, with GRAPES, its optimizer(s), diagnostics and hardware cost accounting.

    Attributes:
        model: the ``nn.Module`` (call it for the forward pass).
        grapes: the :class:`~imc_grapes.grapes.GrapesHandle`, or None without GRAPES.
        backend: ``digital``, ``crossbar`` or ``aihwkit``.
        analog_layers: ``name -> AnalogLayer`` (empty for digital).
        optimizer: the digital base optimizer, or None when there is no digital parameter. It holds every digital
            parameter, also those frozen (``requires_grad=False``) when the network is built: it steps the ones
            that received a gradient, so freezing and unfreezing a digital parameter between steps works.
        importance: the :class:`ImportanceSource` of the analog backends with GRAPES, else None.
        steps: training steps taken.
    """

    def __init__(self, cfg: Any, model: nn.Module, analog_layers: dict[str, AnalogLayer],
                 device: torch.device) -> None:
        self.cfg = cfg
        self.model = model
        self.backend = cfg.backend
        self.device = device
        self.settings = cfg.analog
        self.analog_layers = dict(analog_layers)
        self.weight_layers: dict[str, AnalogLayer | _WeightLayer] = (dict(analog_layers) if analog_layers
                                                                     else dict(_weighted_layers(model)))
        self.energy_table = load_energy_table(self.settings.energy_table)
        self.steps = 0
        self._steps_since = 0
        k = len(COST_KINDS)
        self._net_counts = torch.zeros(k, dtype=torch.float64, device=device)
        # counts of the hooks and of step() (host numbers: the shapes), added to _net_counts when next read
        self._host_counts = [0] * k
        self._totals = torch.zeros(k, dtype=torch.float64, device=device)
        self._since = torch.zeros(k, dtype=torch.float64, device=device)
        self._window: Tensor | None = None
        self._count_matrices: tuple[Tensor, Tensor] | None = None   # _cumulative's (a cache)
        self._hooks: list[torch.utils.hooks.RemovableHandle] = []
        self.sat = MeanMeter()

        # cost windows first, so that GRAPES's refresh (its own pre-hook) falls inside the window
        self._hooks.append(model.register_forward_pre_hook(self._open_window, prepend=True))
        if not self.analog_layers:
            for w_layer in self.weight_layers.values():
                self._hooks.append(w_layer.register_forward_hook(self._count_digital))
        self._dfa = False   # a DFA model: no layer needs its input gradient (see _count_digital)
        for m in model.modules():
            if isinstance(m, DFAFeedback):
                self._dfa = True
                self._hooks.append(m.register_forward_hook(self._count_dfa_feedback))

        self.importance: ImportanceSource | None = None
        self.grapes: GrapesHandle | None = None
        self._refresh_ops = (0, 0)
        self._last_refresh = 0
        mode = cfg.grapes_mode
        if mode:
            if self.analog_layers:
                names: dict[nn.Module, str] = {m: n for n, m in self.analog_layers.items()}
                self.importance = ImportanceSource(self.settings.importance, BP_CLIP if cfg.rule == "bp" else None,
                                                   self.settings.importance_g_offset, names,
                                                   offset_correction=self.settings.importance_offset_correction)
                self.grapes = attach_grapes(model, mode, importance_fn=self.importance.rows,
                                            outgoing_importance_fn=self.importance.cols, rule=cfg.rule,
                                            refresh_every=self.settings.importance_every)
            else:
                self.grapes = attach_grapes(model, mode, rule=cfg.rule)
            self._refresh_ops = self._ops_per_refresh()
            for idx, layer in enumerate(self.grapes.layers):
                self._hooks.append(layer.register_forward_hook(functools.partial(self._count_scale_ops, idx)))

        # every digital parameter, frozen ones included: torch's optimizers skip a parameter whose ``.grad`` is None
        # (zero_grad sets it so; a frozen one gets none), so a parameter frozen now and unfrozen later is stepped
        # once it has a gradient, and a frozen one is not moved (no weight decay, its momentum / Adam state kept)
        analog_ids = {id(p) for layer in self.analog_layers.values() for p in layer.analog_parameters()}
        digital = [p for p in model.parameters() if id(p) not in analog_ids]
        self.optimizer = make_optimizer(cfg, digital) if digital else None

    # ------------------------------------------------------------------ training
    def zero_grad(self) -> None:
        """Zero the digital gradients (set to None) and drop pending analog updates."""
        if self.optimizer is not None:
            self.optimizer.zero_grad(set_to_none=True)
        for layer in self.analog_layers.values():
            layer.clear()

    def step(self) -> None:
        """One optimizer step: the digital optimizer, then the pulsed update of every analog layer."""
        if self.optimizer is not None:
            self.optimizer.step()
        probe = self._probe_due()
        lr = float(self.cfg.lr)
        for name, layer in self.analog_layers.items():
            res = layer.apply_update(lr, probe)
            if res is not None:
                num, den = res
                self.sat.add(f"sat/{name}", num / den.clamp_min(1e-300), den > 0)
        if self.grapes is not None:
            n = self.grapes.refresh_count - self._last_refresh
            self._last_refresh = self.grapes.refresh_count
            if n:
                self._host_counts[_K["grapes_ops"]] += n * self._refresh_ops[0]
                self._host_counts[_K["importance_digital_adds"]] += n * self._refresh_ops[1]
        now = self._cumulative()
        delta = now - (self._window if self._window is not None else now)
        self._window = None
        self._totals += delta
        self._since += delta
        self.steps += 1
        self._steps_since += 1

    def _probe_due(self) -> bool:
        every = self.settings.sat_probe_every
        return bool(self.analog_layers) and every > 0 and self.steps % every == 0

    def step_kind(self) -> tuple[bool, bool]:
        """The host-side decisions of the next training step: ``(saturation probe, importance comparison sample)``
        — whether :meth:`step` measures the realised weight change (``analog.sat_probe_every``) and whether the
        GRAPES refresh samples the array importance against the exact one
        (:meth:`~.importance.ImportanceSource.compare_due`). A step with neither is *plain*: every plain step
        runs the same device work, so a CUDA graph of one can stand for the others
        (:class:`~imc_grapes.cuda_graphs.GraphedSteps`)."""
        compare = self.importance is not None and self.grapes is not None and self.importance.compare_due()
        return self._probe_due(), compare

    def count_replayed_step(self) -> None:
        """The host bookkeeping of a plain training step whose device work was replayed from a CUDA graph (the graph
        repeats the kernels, not the Python): the step counters, GRAPES's batch and refresh counts and the importance
        source's read counts advance as one eager step would advance them. The hooks' host counts of the step are
        in the graph (constants captured with it)."""
        self.steps += 1
        self._steps_since += 1
        handle = self.grapes
        if handle is not None:
            refreshed = handle.count_replayed_batch()
            self._last_refresh = handle.refresh_count
            if refreshed and self.importance is not None:
                self.importance.count_replayed_reads(len(handle.layers) - (1 if handle.rule == "dfa" else 0))

    # ------------------------------------------------------------------ counting
    def _cumulative(self) -> Tensor:
        """The cumulative counts ``[len(COST_KINDS)]`` (float64, a new tensor): the network's own and every analog
        layer's, those with :meth:`~.layers.AnalogLayer.count_terms` in one product over all their counters (read
        twice per training step: a stack and a matrix-vector product per dtype of counter instead of a few
        operations per layer; the counts are integers below ``2**53``, so the sums are exact in any order)."""
        self.flush_host_counts()
        total = self._net_counts
        terms: list[tuple[Tensor, list[Tensor], list[Tensor]]] = []
        counters: list[Tensor] = []
        floats: list[Tensor] = []
        for layer in self.analog_layers.values():
            t = layer.count_terms()
            if t is None:
                total = total + layer.counts().to(total.device)
            else:
                terms.append(t)
                counters += t[1]
                floats += t[2]
        if not terms:
            return total.clone() if total is self._net_counts else total
        cache = self._count_matrices    # the layers' matrices side by side, integer then floating columns
        if cache is None or cache[0].shape[1] != len(counters) or cache[0].device != total.device:
            cache = self._count_matrices = (
                torch.cat([m[:, :len(c)] for m, c, _ in terms], dim=1).to(total.device),
                torch.cat([m[:, len(c):] for m, c, _ in terms], dim=1).to(total.device))
        # one stack per dtype: torch.stack converts mixed dtypes one tensor at a time (~70 µs for 30 0-d tensors)
        for m, group in zip(cache, (counters, floats)):
            if group:
                total = torch.addmv(total, m, torch.stack(group).to(device=total.device, dtype=total.dtype))
        return total

    def flush_host_counts(self) -> None:
        """Add the host-side counts gathered since the last read to ``_net_counts`` (one small operation per kind
        counted: a hook adding to a device tensor element cost ~10 µs per count, three counts per layer and
        forward on the digital backend). Nothing is pending after a whole :meth:`step`."""
        pending = self._host_counts
        for k, v in enumerate(pending):
            if v:
                self._net_counts.select(0, k).add_(v)
                pending[k] = 0

    def _open_window(self, module: nn.Module, args: object) -> None:
        if torch.is_grad_enabled() and self._window is None:     # either module mode (module docstring)
            self._window = self._cumulative()

    def _count_digital(self, module: _WeightLayer, inputs: tuple[Any, ...], output: Tensor) -> None:
        if not torch.is_grad_enabled():
            return
        w = module.weight
        n_out = w.shape[0]
        n_in = w.numel() // n_out
        n_vec = output.numel() // n_out
        x = inputs[0] if inputs else None
        # DFA sends no error through the weights (each hidden layer gets ``B e`` directly, what arrives from above is
        # discarded, as the analog backends' ``zeros`` backward): torch computes those input gradients, a chip would not
        needs_input_grad = isinstance(x, Tensor) and x.requires_grad and not self._dfa
        # a frozen layer (``weight.requires_grad_(False)``) gets no weight gradient: torch computes none
        needs_weight_grad = w.requires_grad
        c = self._host_counts
        c[_K["forward_mvms"]] += n_vec
        c[_K["backward_mvms"]] += n_vec if needs_input_grad else 0
        # the weight products only: a bias's adds and its gradient's batch sum are additions, not MACs (costs.py's
        # definition of digital_macs says why they are left out)
        c[_K["digital_macs"]] += n_vec * n_out * n_in * (1 + needs_weight_grad + needs_input_grad)

    def _count_dfa_feedback(self, module: DFAFeedback, inputs: tuple[Any, ...], output: Tensor) -> None:
        if len(inputs) > 1 and inputs[1] is not None and torch.is_grad_enabled():
            self._host_counts[_K["digital_macs"]] += output.numel() * module.n_classes

    def _count_scale_ops(self, idx: int, module: nn.Module, inputs: tuple[Any, ...], output: Tensor) -> None:
        if not torch.is_grad_enabled():
            return
        handle = self.grapes
        assert handle is not None
        if not handle.modulated(idx):
            return
        # only scalings that happen: a frozen layer's (no update, no weight gradient) and an output that sends no
        # gradient (GRAPES's gradient hook is not registered on it) are not scaled
        if not handle.is_local:   # the output gradient scaled by GRAPES's hook on the output (the bias's with it)
            if not (isinstance(output, Tensor) and output.requires_grad):
                return
            ops = output.numel()
        else:
            # the digital parameters' gradients that GRAPES's parameter hook scales (handle.scaled_params: a digital
            # layer's weight and bias, an analog layer's bias, each while it requires a gradient): one multiply per
            # element (by M, or under DFA by p_post — a bias has no per-synapse factor); under DFA a digital weight's
            # factor p_post_i · p_pre_j of every synapse is one more. GRAPES hooks every such parameter at a forward
            # (its own forward hook, run before this one; one frozen at attach and unfrozen later included), so a
            # parameter counted here is a parameter scaled
            ops = sum(p.numel() * (2 if handle.rule == "dfa" and name == "weight" else 1)
                      for name, p in handle.scaled_params(idx, module))
            if isinstance(module, AnalogLayer):   # d (and DFA's x) scaled for the pulsed update
                if any(p.requires_grad for p in module.analog_parameters()):
                    ops += output.numel()
                    if handle.rule == "dfa":
                        x = inputs[0]
                        ops += x.numel() if isinstance(x, Tensor) else 0
        self._host_counts[_K["grapes_ops"]] += ops

    def _ops_per_refresh(self) -> tuple[int, int]:
        handle = self.grapes
        assert handle is not None
        source = self.settings.importance if self.analog_layers else "exact"
        ops = adds = 0
        for idx, layer in enumerate(handle.layers):
            if not handle.modulated(idx):
                continue
            if isinstance(layer, AnalogLayer):
                n_out, n_in = layer.out_features, layer.in_features
            else:
                w = cast(Tensor, layer.weight)   # a digital weight layer
                n_out, n_in = w.shape[0], w[0].numel()
            partial = 1
            if isinstance(layer, CrossbarLayer):
                grid = layer.inner.tile.grid
                partial = grid.n_row_tiles if handle.rule == "dfa" else grid.n_col_tiles
            corrected = source == "array" and self.settings.subtracts_importance_offset
            o, a = grapes_refresh_ops(n_out, n_in, handle.rule, handle.mode, source, partial, corrected)
            ops, adds = ops + o, adds + a
        return ops, adds

    # ------------------------------------------------------------------ diagnostics
    def metrics(self) -> dict[str, float]:
        """Flat diagnostics since the last call (then reset).

        * ``sat/<layer>``: mean over the probe steps of ``⟨ΔW_real, ΔW_int⟩ / ‖ΔW_int‖²`` (analog backends);
        * ``M_corr/<layer>``, ``M_err/<layer>``: Pearson correlation and mean |difference| of the array and
          the exact factor vectors (analog, GRAPES, ``importance='array'`` only);
        * ``cost/<kind>_per_step`` for every cost kind, ``cost/ops_per_step``, ``cost/energy_pj_per_step``.
        """
        out: dict[str, float] = {}
        out.update(self.sat.means())
        self.sat.reset()
        if self.importance is not None:
            out.update(self.importance.stats(reset=True))
        if self._steps_since > 0:
            per = [v / self._steps_since for v in self._since.tolist()]
            per_step = dict(zip(COST_KINDS, per))
            for kind, v in per_step.items():
                out[f"cost/{kind}_per_step"] = v
            out["cost/ops_per_step"] = ops_total(per_step)
            out["cost/energy_pj_per_step"] = self._energy(per_step)["total"]
        self._since.zero_()
        self._steps_since = 0
        return out

    def _converter_bits(self) -> tuple[int, int]:
        """``(adc_bits, dac_bits)`` the conversions are priced at (the digital backend converts nothing: 0, 0)."""
        if not self.analog_layers:
            return 0, 0
        return self.settings.adc_bits, self.settings.dac_bits

    def _energy(self, counts: dict[str, float]) -> dict[str, float]:
        return energy_breakdown(counts, self.energy_table, *self._converter_bits())

    def cost_summary(self, steps_per_epoch: int | None = None) -> dict[str, Any]:
        """Cumulative training costs, per-step averages (and per epoch if ``steps_per_epoch`` is given),
        GRAPES's digital operations and the energy estimate with the table used; JSON-friendly.

        The scalars to divide for "GRAPES overhead = cost(GRAPES run) / cost(SGD run)" are
        ``energy_pj_per_step`` and ``ops_per_step``; ``grapes_ops`` is GRAPES's own digital work.
        """
        totals = dict(zip(COST_KINDS, self._totals.tolist()))
        n = max(self.steps, 1)
        per_step = {k: v / n for k, v in totals.items()}
        energy_total = self._energy(totals)
        energy_step = self._energy(per_step)
        summary: dict[str, Any] = {
            "backend": self.backend,
            "rule": self.cfg.rule,
            "grapes_mode": self.cfg.grapes_mode,
            "importance": (self.settings.importance if self.analog_layers and self.grapes is not None else
                           ("exact" if self.grapes is not None else None)),
            "importance_every": self.settings.importance_every if self.analog_layers else 1,
            "steps": self.steps,
            "counts": totals,
            "per_step": per_step,
            "grapes_ops": totals["grapes_ops"],
            "grapes_ops_per_step": per_step["grapes_ops"],
            "ops_per_step": ops_total(per_step),
            "energy_pj_per_step": energy_step["total"],
            "energy_pj": {"total": energy_total["total"], "per_step": energy_step["total"],
                          "by_kind": energy_total, "by_kind_per_step": energy_step},
            "energy_table": summary_table(self.energy_table, *self._converter_bits()),
            "notes": self._notes(),
        }
        if steps_per_epoch is not None:
            summary["per_epoch"] = {k: v * steps_per_epoch for k, v in per_step.items()}
            summary["energy_pj_per_epoch"] = energy_step["total"] * steps_per_epoch
        return summary

    def _notes(self) -> dict[str, str]:
        if self.backend == "crossbar":
            return {"counts": "from the crossbar tiles' hardware counters"}
        if self.backend == "aihwkit":
            return {"counts": "analytic from the layer shapes (one pass per tile and vector: bound-management "
                              "repeats not included)",
                    "pulses": "expected number of pulse coincidences of aihwkit's update rule, not a count"}
        return {"counts": "digital: MACs of forward, weight gradient and input gradient (where the rule needs one: "
                          "not the first layer's, none under DFA)"}

    # ------------------------------------------------------------------ weights
    def read_weights(self) -> dict[str, Tensor]:
        """Exact weights of every weight layer, ``name -> tensor`` in the torch layer's shape (no read noise).

        For devices with write noise (e.g. ``ReRamSB``) these are the weights the MVMs see (the persistent
        device states plus the write noise drawn at their last update), as aihwkit's ``get_weights``.
        """
        out: dict[str, Tensor] = {}
        for name, layer in self.weight_layers.items():
            if isinstance(layer, AnalogLayer):
                out[name] = layer.get_weights()
            else:
                out[name] = layer.weight.detach().clone()
        return out

    @torch.no_grad()
    def write_weights(self, w: Mapping[str, Tensor], write_noise: bool = True, clip: bool = True) -> None:
        """Program weights back (analog: clipped into the device bounds). Names must be among
        :meth:`read_weights`'s; layers not named keep their weights. ``write_noise=False``: on the crossbar
        backend's devices with write noise the MVMs see ``w`` itself, no fresh draw (aihwkit always draws).
        ``clip=False``: on the crossbar backend the states are set to ``w`` as given, beyond the device bounds
        if need be (to evaluate given weights, e.g. after inference noise; aihwkit always clips).

        ``ValueError`` naming the layer for a NaN or ±Inf entry in any analog layer's weights
        (:func:`crossbar.check_finite_weights`), before anything is written."""
        unknown = sorted(set(w) - set(self.weight_layers))
        if unknown:
            raise ValueError(f"write_weights: unknown layer(s) {unknown}; valid: {sorted(self.weight_layers)}"
                             f"{did_you_mean_each(unknown, self.weight_layers)}")
        for name, value in w.items():
            if isinstance(self.weight_layers[name], AnalogLayer):
                crossbar.check_finite_weights(f"write_weights: layer {name!r}", value.detach())
        for name, value in w.items():
            layer = self.weight_layers[name]
            if isinstance(layer, AnalogLayer):
                layer.set_weights(value, write_noise, clip)
            else:
                if tuple(value.shape) != tuple(layer.weight.shape):
                    raise ValueError(f"write_weights: layer {name!r} expects shape {tuple(layer.weight.shape)}, "
                                     f"got {tuple(value.shape)}")
                layer.weight.copy_(value)

    @contextlib.contextmanager
    def state_kept(self) -> Iterator[None]:
        """Put the model back into its exact state on exit: device states and their write noise, the tiles' random
        generators, counters and digital parameters (a copy of ``state_dict`` loaded back). For work that writes
        other weights into the network for a while, e.g. the inference evaluation. (aihwkit layers on a device with
        write noise do not come back exactly: aihwkit 1.1's own ``state_dict`` round trip programs the *noisy* weights
        it saved, clipped, as the new device states and draws a new write noise on top, so the device states move by
        one write-noise draw; its tiles also get new ``AnalogContext`` objects.)"""
        state = copy.deepcopy(self.model.state_dict())
        try:
            yield
        finally:
            self.model.load_state_dict(state)

    def close(self) -> None:
        """Remove GRAPES and the counting hooks (the model keeps its weights)."""
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
        if self.grapes is not None:
            self.grapes.remove()
