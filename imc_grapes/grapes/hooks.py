"""Apply GRAPES to any torch model through hooks: it modulates error signals / weight gradients, it is not
an optimizer, so it composes with every ``torch.optim`` optimizer (SGD, momentum, Adam, ...).

Mechanism (one :class:`GrapesHandle` per model):

* A forward pre-hook on the model recomputes the factors from the current weights once per training
  batch (when ``model.training`` and grad mode is on). Eval forwards and ``torch.no_grad()`` forwards do
  not recompute; :meth:`GrapesHandle.refresh` recomputes on demand.
* A forward hook on each modulated layer records the factors current at its forward; the backward of
  that forward pass uses exactly those (held fixed for the batch, even if ``refresh()`` runs in between).
* ``propagated`` (grapes.md §2): a tensor hook on the layer's output (pre-activation) multiplies the
  incoming gradient by ``M`` per output neuron / channel (broadcast over batch and spatial dims). This is
  the reference's ``δ^l = M^l ⊙ (Wᵀδ^{l+1}) ⊙ f'(a^l)`` (element-wise factors commute), so the modulated
  δ reaches the layer's weight (and bias) gradient and everything upstream.
* ``local``: a hook on the layer's ``weight`` (and ``bias``) gradient scales its rows by ``M``; the error
  sent upstream is the unmodulated one. A parameter frozen at attach (``requires_grad=False``: torch hooks only
  a tensor that needs a gradient) gets its hook at the first training forward after it is unfrozen, so every
  gradient it receives is scaled, as the backends' cost counters assume.
* ``layer-mean`` / ``layer-mean-local``: as above with each layer's factors replaced by their layer mean.
* rule ``dfa``: hidden layer 0 unmodulated, layer ``k >= 1`` weight gradient scaled per synapse by
  ``P^{k+1}_i · P^k_j`` (:func:`~imc_grapes.grapes.core.dfa_modulations`). DFA sends no error upstream
  (each hidden layer receives ``B e`` directly), so "propagated" and "local" coincide; the layer-mean
  modes replace each ``P`` by its mean.
* ``refresh_every=k``: the factors are recomputed on the first training batch and then every ``k``-th
  one (held fixed in between), e.g. to model an importance read that the hardware does only every k batches.

Analog layers (no float weight gradient; their weights change by a pulsed update at the optimizer step):
a layer that has an attribute ``error_scale`` (``crossbar.AnalogModuleBase`` and the layers of
:mod:`imc_grapes.backends`) gets the *local* form and the DFA factors through attributes instead of
gradient hooks: at each training forward the hook sets ``layer.error_scale = M`` (``[out]``, multiplies the
error ``d`` that the pulsed update uses, not the one sent upstream); for ``dfa`` it sets ``error_scale =
P^{k+1}`` and ``layer.input_scale = P^k`` (``[in]``, multiplies the update's input ``x``) — a rank-1
per-synapse factor ``P^{k+1}_i P^k_j`` is exactly a scaling of the error and the input lines of the
update. DFA on an analog layer therefore needs an ``input_scale`` attribute too. The *propagated* form needs
nothing special (the output-gradient hook scales the ``d`` the layer stashes for its update). An analog
layer's digital bias (``layer.bias``, if any) gets the local factor in its gradient as a digital layer's
does. ``remove()`` resets these attributes to ``None``.

Importance sources (the contract later backends plug into):

* ``importance_fn(layer) -> Tensor[out]``: non-negative importance of each output neuron / channel of
  ``layer`` (default :func:`exact_importance`, ``Σ_j |W_ij|`` of ``layer.weight``). Called under
  ``torch.no_grad()`` once per training batch per modulated layer; it may be a hardware read (a crossbar
  tile's row sums through its periphery) and may be noisy. The layer may be any module whose output has
  one feature dim of that length: dim -1 for linear-like modules (``nn.Linear``, ``FALinear``, or any
  module with an ``in_features`` attribute), else dim 1 (``[batch, C, ...]`` convolutions; dim 0 of a
  convolution's unbatched ``[C, ...]`` output, for torch's and any module with a tuple ``kernel_size``); a module
  can override this with an integer attribute ``grapes_feature_dim``.
* ``outgoing_importance_fn(layer) -> Tensor[in]`` (rule ``dfa`` only): column sums ``Σ_i |W_ij|``
  (default :func:`exact_outgoing_importance`).
* Either may also offer ``many(layers) -> list[Tensor]``, the importances of several layers in one call (a
  chip reading all its tiles at once; :class:`imc_grapes.backends.ImportanceSource` batches its array reads
  so): a refresh then reads every layer with one call.

Copies: ``copy.deepcopy(model)`` (and ``torch.save`` / ``torch.load`` of the whole model) gives a copy that
carries its own, working GRAPES, independent of the original's: a new :class:`GrapesHandle` (the copy's
``_imc_grapes_attached``; its ``model`` and ``layers`` are the copy's, its factors and counts copies of the
original's at the time) whose module hooks are in the copy's modules, so ``remove()`` on either handle leaves
the other model's GRAPES as it is. torch copies no tensor hook with a parameter, so the local forms' gradient
hooks are not copied: the copied handle forgets which parameters it hooked and hooks the copy's parameters at
the copy's first forward with grad enabled (as for a parameter unfrozen after attach), before any backward
through the copy. ``copy.deepcopy(handle)`` alone copies the model with it. (A model that also carries a
:class:`~imc_grapes.backends.Network`'s hooks copies that network along, its optimizer and counters included.)

Attach after moving/casting the model (``model.to(...)`` keeps parameter objects by default, so hooks
survive it; a module that replaces its parameters gets the local-mode gradient hooks on the new ones at its
next forward with grad enabled, but a gradient computed without such a forward is not scaled).

Deviation from the reference, documented: with dropout, the reference computes ``F`` from
``drop_mask * W`` of the batch's first sample (so the max runs over the kept neurons only); here ``F``
comes from the full weights, independent of dropout. Without dropout the two agree exactly.
"""

from __future__ import annotations

import functools
from typing import Callable, Iterable, Sequence

import torch
from torch import Tensor, nn

from crossbar import AnalogModuleBase

from ..suggest import did_you_mean
from .core import BP_CLIP, dfa_modulations, importance, layer_mean, modulation, outgoing_importance, synapse_modulation
from .feedback import FALinear

__all__ = [
    "MODES",
    "RULES",
    "ImportanceFn",
    "GrapesHandle",
    "attach_grapes",
    "exact_importance",
    "exact_outgoing_importance",
    "default_hidden_layers",
]

MODES: tuple[str, ...] = ("propagated", "local", "layer-mean", "layer-mean-local")
RULES: tuple[str, ...] = ("bp", "fa", "dfa")

ImportanceFn = Callable[[nn.Module], Tensor]


def _read_all(fn: ImportanceFn, layers: Sequence[nn.Module]) -> list[Tensor]:
    """``[fn(layer) for layer in layers]``, in one call when ``fn`` offers ``many(layers)``."""
    many = getattr(fn, "many", None)
    if not callable(many):
        return [fn(layer) for layer in layers]
    reads = list(many(layers))
    if len(reads) != len(layers):
        raise ValueError(f"an importance source's many(layers) must return one tensor per layer ({len(layers)}), "
                         f"got {len(reads)}")
    return reads


def _modulations(reads: list[Tensor], clip: tuple[float, float] | None) -> list[Tensor]:
    """``[modulation(f, clip) for f in reads]``, in one call on their stack when they have one shape (the same
    numbers: the modulation works row by row)."""
    if len(reads) > 1:
        shape, dtype, device = reads[0].shape, reads[0].dtype, reads[0].device
        if all(f.shape == shape and f.dtype == dtype and f.device == device for f in reads):
            return list(modulation(torch.stack(reads), clip).unbind(0))
    return [modulation(f, clip) for f in reads]


_ATTACHED_FLAG = "_imc_grapes_attached"
# the layers default_hidden_layers finds; AnalogModuleBase: crossbar.AnalogLinear and AnalogConv2d
_WEIGHTED_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, FALinear, AnalogModuleBase)


def _weight_of(layer: nn.Module) -> Tensor:
    w = getattr(layer, "weight", None)
    if not isinstance(w, Tensor):
        raise ValueError(
            f"GRAPES: layer {type(layer).__name__} has no tensor 'weight'; pass importance_fn= "
            "(and outgoing_importance_fn= for DFA) that reads its importance"
        )
    return w


def exact_importance(layer: nn.Module) -> Tensor:
    """Default importance source: ``F = Σ_j |W_ij|`` of ``layer.weight`` -> ``[out]``."""
    return importance(_weight_of(layer).detach())


def exact_outgoing_importance(layer: nn.Module) -> Tensor:
    """Default DFA source: column sums ``Σ_i |W_ij|`` of ``layer.weight`` -> ``[in]``."""
    return outgoing_importance(_weight_of(layer).detach())


def default_hidden_layers(model: nn.Module) -> list[nn.Module]:
    """The layers GRAPES modulates by default.

    ``model.hidden_layers()`` if the model defines it (all models of :mod:`imc_grapes.models` do);
    otherwise every ``Linear``/``Conv``/``FALinear`` module and every analog layer of :mod:`crossbar`
    (``AnalogLinear``, ``AnalogConv2d``) in registration order except the last one (taken to be the output layer).
    """
    fn = getattr(model, "hidden_layers", None)
    if callable(fn):
        return list(fn())
    found: list[nn.Module] = [m for m in model.modules() if isinstance(m, _WEIGHTED_TYPES)]
    if len(found) < 2:
        raise ValueError(
            f"attach_grapes: found {len(found)} Linear/Conv layers in {type(model).__name__}; need an output "
            "layer plus at least one hidden layer, or pass layers= explicitly"
        )
    return found[:-1]


def _feature_dim(layer: nn.Module, ndim: int) -> int:
    dim = getattr(layer, "grapes_feature_dim", None)
    if isinstance(dim, int):
        return dim
    # a convolution (torch's, or one with a tuple kernel_size, e.g. crossbar.AnalogConv2d): [N, C, *spatial], or
    # unbatched [C, *spatial]
    kernel = getattr(layer, "kernel_size", None)
    if isinstance(kernel, tuple):
        return 0 if ndim == len(kernel) + 1 else 1
    if ndim <= 2 or isinstance(layer, (nn.Linear, FALinear)) or hasattr(layer, "in_features"):
        return -1
    return 1


def _scale_grad(m: Tensor, g: Tensor) -> Tensor:
    return g * m.to(g.dtype)


def _broadcast(m: Tensor, ndim: int, dim: int, like: Tensor) -> Tensor:
    shape = [1] * ndim
    shape[dim] = -1
    return m.to(device=like.device, dtype=like.dtype).reshape(shape)


class GrapesHandle:
    """GRAPES attached to one model. Created by :func:`attach_grapes`.

    Attributes:
        mode: one of :data:`MODES`. rule: one of :data:`RULES`.
        layers: the modulated layers, forward order. names: their names in the model.
        modulations: ``name -> factor`` of the last refresh: ``[out]`` for bp/fa (``M``), ``[out, in]``
            for dfa (per-synapse ``P^{k+1} ⊗ P^k``; hidden layer 0 is absent: unmodulated).
        importances: ``name -> importance`` read at the last refresh (``F: [out]``; dfa: ``colsum: [in]``).
        refresh_count: number of refreshes so far (one per ``refresh_every`` training batches).
        refresh_every: recompute the factors every k-th training batch (1 = every batch).
        train_batches: training forwards seen so far (those that could trigger a refresh).
    """

    def __init__(
        self,
        model: nn.Module,
        layers: list[nn.Module],
        names: list[str],
        mode: str,
        rule: str,
        importance_fn: ImportanceFn,
        outgoing_importance_fn: ImportanceFn,
        refresh_every: int = 1,
    ) -> None:
        self.model = model
        self.refresh_every = int(refresh_every)
        self.train_batches = 0
        self.layers = tuple(layers)
        self.names = tuple(names)
        self.mode = mode
        self.rule = rule
        self.importance_fn = importance_fn
        self.outgoing_importance_fn = outgoing_importance_fn
        self.modulations: dict[str, Tensor] = {}
        self.importances: dict[str, Tensor] = {}
        self.refresh_count = 0
        self.removed = False
        # Per layer index: the factors in use (row factor [out] or (p_post, p_pre)), current and
        # as recorded at the layer's last forward (the backward of that pass uses the recorded ones).
        self._current: list[object | None] = [None] * len(layers)
        self._at_forward: list[object | None] = [None] * len(layers)
        self._hooks: list[torch.utils.hooks.RemovableHandle] = []
        # the parameters' gradient hooks (local forms), and (layer index, parameter name) -> the parameter tensor
        # that has one; neither is copied with the handle (__getstate__): torch copies no tensor hook
        self._param_hooks: list[torch.utils.hooks.RemovableHandle] = []
        self._hooked: dict[tuple[int, str], Tensor] = {}
        self._install()

    # ----------------------------------------------------------------------------------------- factors
    @property
    def clip(self) -> tuple[float, float] | None:
        """The clip range used: ``(1, 2)`` for bp, ``None`` (unclipped) for fa and dfa."""
        return BP_CLIP if self.rule == "bp" else None

    @property
    def uses_layer_mean(self) -> bool:
        return self.mode.startswith("layer-mean")

    @property
    def is_local(self) -> bool:
        return self.mode.endswith("local") or self.rule == "dfa"

    @torch.no_grad()
    def refresh(self) -> None:
        """Recompute every layer's factors from the current weights (or importance source) now."""
        self._check_live()
        if self.rule == "dfa":
            self._refresh_dfa()
        else:
            reads = _read_all(self.importance_fn, self.layers)
            for f, name in zip(reads, self.names):
                if f.dim() != 1:
                    raise ValueError(
                        f"importance_fn must return a 1-D tensor [out] for layer {name!r}, got shape {tuple(f.shape)}"
                    )
            mean = self.uses_layer_mean
            for k, (f, m, name) in enumerate(zip(reads, _modulations(reads, self.clip), self.names)):
                if mean:
                    m = layer_mean(m)
                self._current[k] = m
                self.importances[name] = f
                self.modulations[name] = m
        self.refresh_count += 1

    def _refresh_dfa(self) -> None:
        outgoing: list[Tensor | None] = [None]
        for o, name in zip(_read_all(self.outgoing_importance_fn, self.layers[1:]), self.names[1:]):
            if o.dim() != 1:
                raise ValueError(
                    f"outgoing_importance_fn must return a 1-D tensor [in] for layer {name!r}, "
                    f"got shape {tuple(o.shape)}"
                )
            outgoing.append(o)
            self.importances[name] = o
        last_out = _out_features(self.layers[-1])
        factors = dfa_modulations(outgoing, last_out, layer_mean if self.uses_layer_mean else None)
        for k, (fac, name) in enumerate(zip(factors, self.names)):
            self._current[k] = fac
            if fac is not None:
                self.modulations[name] = synapse_modulation(*fac)

    def modulated(self, k: int) -> bool:
        """Whether layer ``k`` gets a GRAPES factor: every layer but DFA's hidden layer 0 (unmodulated)."""
        return not (self.rule == "dfa" and k == 0)

    def scaled_params(self, k: int, layer: nn.Module) -> list[tuple[str, Tensor]]:
        """The parameters of layer ``k`` (``layer``) whose gradient the local forms scale through a gradient hook,
        as ``(name, tensor)``: a digital layer's ``weight`` and ``bias``, an analog layer's digital ``bias`` (the
        local factors reach an analog layer's in-memory weight update through its ``error_scale`` /
        ``input_scale`` instead), each while it requires a gradient (torch hooks only such a tensor); none for the
        non-local forms (they scale the output's gradient) or an unmodulated layer (:meth:`modulated`).

        The one place that decides it: :meth:`_hook_params` hooks these, and the backends' cost counters count a
        scaling of each of them per forward."""
        if not self.is_local or not self.modulated(k):
            return []
        named = ((n, getattr(layer, n, None)) for n in (("bias",) if _is_analog(layer) else ("weight", "bias")))
        return [(n, p) for n, p in named if isinstance(p, Tensor) and p.requires_grad]

    def _factor(self, k: int) -> object | None:
        if self._current[k] is None and self.modulated(k):
            self.refresh()
        return self._current[k]

    # ------------------------------------------------------------------------------------------- hooks
    def _install(self) -> None:
        self._hooks.append(self.model.register_forward_pre_hook(self._model_pre_hook))
        for k, layer in enumerate(self.layers):
            self._hooks.append(layer.register_forward_hook(functools.partial(self._forward_hook, k)))
            self._hook_params(k, layer)

    def _hook_params(self, k: int, layer: nn.Module) -> None:
        """Local forms: give each parameter of layer ``k`` whose gradient GRAPES scales (:meth:`scaled_params`)
        its gradient hook, once.

        Called at attach and again at every forward with grad enabled, so that a parameter that needs no
        gradient at attach (a frozen bias; torch hooks only a tensor that requires one) is hooked at the first
        forward after it is unfrozen: every gradient of these parameters that a backward computes is scaled, and
        the backends' cost counters (which count a scaling per forward of a parameter that requires a gradient)
        count exactly the scalings done. A parameter the layer replaces (a new tensor) is hooked anew."""
        for pname, p in self.scaled_params(k, layer):
            if self._hooked.get((k, pname)) is not p:
                self._param_hooks.append(p.register_hook(functools.partial(self._param_hook, k, pname)))
                self._hooked[(k, pname)] = p

    def _model_pre_hook(self, module: nn.Module, args: object) -> None:
        if module.training and torch.is_grad_enabled():
            if self.train_batches % self.refresh_every == 0:
                self.refresh()
            self.train_batches += 1

    def count_replayed_batch(self) -> bool:
        """Advance the batch (and refresh) counts as a training forward does, for a batch whose device work — the
        refresh included — was replayed from a CUDA graph (:mod:`imc_grapes.cuda_graphs`). Returns whether that batch
        refreshed the factors."""
        self._check_live()
        refreshed = self.train_batches % self.refresh_every == 0
        self.refresh_count += refreshed
        self.train_batches += 1
        return refreshed

    def _forward_hook(self, k: int, layer: nn.Module, inputs: object, output: object) -> None:
        if not torch.is_grad_enabled():
            return
        fac = self._factor(k)
        self._at_forward[k] = fac
        self._hook_params(k, layer)
        if self.is_local and _is_analog(layer):
            _set_analog_factors(layer, fac)
            return
        if self.is_local or fac is None:
            return
        if not isinstance(output, Tensor) or not output.requires_grad:
            return
        assert isinstance(fac, Tensor)
        dim = _feature_dim(layer, output.dim())
        if output.shape[dim] != fac.shape[0]:
            raise RuntimeError(
                f"GRAPES: layer {self.names[k]!r} output has {output.shape[dim]} features on dim {dim}, "
                f"but its factor has {fac.shape[0]}; set layer.grapes_feature_dim"
            )
        output.register_hook(functools.partial(_scale_grad, _broadcast(fac, output.dim(), dim, output)))

    def _param_hook(self, k: int, pname: str, g: Tensor) -> Tensor:
        fac = self._at_forward[k] if self._at_forward[k] is not None else self._factor(k)
        if fac is None:
            return g
        if isinstance(fac, tuple):  # dfa: (p_post [out], p_pre [in])
            p_post, p_pre = fac
            if pname == "bias":
                return g * p_post.to(g.dtype)
            return g * synapse_modulation(p_post, p_pre).to(g.dtype)
        assert isinstance(fac, Tensor)
        return g * fac.to(g.dtype).reshape([-1] + [1] * (g.dim() - 1))

    # --------------------------------------------------------------------------------------- lifecycle
    def _check_live(self) -> None:
        if self.removed:
            raise RuntimeError("GrapesHandle was removed; attach_grapes() again to re-enable GRAPES")

    def remove(self) -> None:
        """Remove every hook; the model trains with its plain rule again. Idempotent."""
        for h in self._hooks + self._param_hooks:
            h.remove()
        self._hooks.clear()
        self._param_hooks.clear()
        self._hooked.clear()
        if not self.removed and self.is_local:
            for layer in self.layers:
                if _is_analog(layer):
                    _set_analog_factors(layer, None)
        if not self.removed and getattr(self.model, _ATTACHED_FLAG, None) is self:
            delattr(self.model, _ATTACHED_FLAG)
        self.removed = True

    def __getstate__(self) -> dict[str, object]:
        """The state that a copy (``copy.deepcopy``, pickling) carries: all but the parameters' gradient hooks,
        which torch does not copy with a parameter; the copy hooks its model's parameters at their next forward
        with grad enabled (module docstring, "Copies")."""
        state = dict(self.__dict__)
        state["_param_hooks"] = []
        state["_hooked"] = {}
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        """Restore a copy's state; a handle pickled by an earlier version (without ``_param_hooks`` / ``_hooked``)
        gets them empty, so that it too hooks its model's parameters at their next forward with grad enabled."""
        self.__dict__.update(state)
        self.__dict__.setdefault("_param_hooks", [])
        self.__dict__.setdefault("_hooked", {})

    def __enter__(self) -> "GrapesHandle":
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def __repr__(self) -> str:
        state = "removed" if self.removed else f"{len(self.layers)} layers"
        return f"GrapesHandle(mode={self.mode!r}, rule={self.rule!r}, {state})"


def _is_analog(layer: nn.Module) -> bool:
    """An analog layer: its weights are updated in memory, local factors go to ``layer.error_scale``."""
    return hasattr(layer, "error_scale")


def _set_analog_factors(layer: nn.Module, fac: object | None) -> None:
    """Set ``error_scale`` (and ``input_scale`` for a DFA pair) of an analog layer; ``None`` clears them."""
    if isinstance(fac, tuple):  # dfa: (p_post [out], p_pre [in])
        setattr(layer, "error_scale", fac[0])
        setattr(layer, "input_scale", fac[1])
        return
    setattr(layer, "error_scale", fac)
    if getattr(layer, "input_scale", None) is not None:
        setattr(layer, "input_scale", None)


def _out_features(layer: nn.Module) -> int:
    n = getattr(layer, "out_features", None)
    if isinstance(n, int):
        return n
    return int(_weight_of(layer).shape[0])


def attach_grapes(
    model: nn.Module,
    mode: str = "propagated",
    *,
    importance_fn: ImportanceFn | None = None,
    layers: Iterable[nn.Module] | None = None,
    rule: str | None = None,
    outgoing_importance_fn: ImportanceFn | None = None,
    refresh_every: int = 1,
) -> GrapesHandle:
    """Attach GRAPES to ``model``; returns the handle (``.remove()`` detaches it).

    Args:
        model: any ``nn.Module``; its forward pre-hook triggers the once-per-batch recomputation.
        mode: ``"propagated"`` (default), ``"local"``, ``"layer-mean"`` or ``"layer-mean-local"``.
        importance_fn: ``layer -> Tensor[out]`` importance source (default :func:`exact_importance`).
        layers: the hidden layers to modulate, in forward order (default :func:`default_hidden_layers`:
            every Linear/Conv except the output layer). For ``dfa`` the first one stays unmodulated.
        rule: ``"bp"`` (M clipped to [1, 2]), ``"fa"`` (M = 2F/max F, unclipped) or ``"dfa"``
            (per-synapse ``P^{k+1}_i P^k_j``); default ``model.rule`` if the model has one, else ``"bp"``.
        outgoing_importance_fn: ``layer -> Tensor[in]`` for ``dfa`` (default column sums of |W|).
        refresh_every: recompute the factors every k-th training batch (integer >= 1; default 1).

    Raises:
        ValueError: unknown mode or rule, no layers, a layer outside ``model``, GRAPES already attached,
            ``local``/``dfa`` on a layer without a ``weight`` gradient to scale (and not analog, see the
            module docstring), or ``refresh_every`` < 1.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"attach_grapes.model must be an nn.Module, got {type(model).__name__}")
    if isinstance(refresh_every, bool) or not isinstance(refresh_every, int) or refresh_every < 1:
        raise ValueError(f"attach_grapes.refresh_every must be an integer >= 1, got {refresh_every!r}")
    if mode not in MODES:
        raise ValueError(f"attach_grapes.mode must be one of {MODES}, got {mode!r}{did_you_mean(mode, MODES)}")
    r = rule if rule is not None else getattr(model, "rule", "bp")
    if r not in RULES:
        raise ValueError(f"attach_grapes.rule must be one of {RULES}, got {r!r}{did_you_mean(r, RULES)}")
    if getattr(model, _ATTACHED_FLAG, None) is not None:
        raise ValueError(
            f"attach_grapes: {type(model).__name__} already has GRAPES attached; call handle.remove() first"
        )
    hidden = list(layers) if layers is not None else default_hidden_layers(model)
    if not hidden:
        raise ValueError("attach_grapes.layers must name at least one layer, got none")
    names_by_id = {id(m): n for n, m in model.named_modules()}
    names: list[str] = []
    for i, layer in enumerate(hidden):
        if not isinstance(layer, nn.Module):
            raise ValueError(f"attach_grapes.layers[{i}] must be an nn.Module, got {type(layer).__name__}")
        if id(layer) not in names_by_id:
            raise ValueError(f"attach_grapes.layers[{i}] ({type(layer).__name__}) is not a submodule of the model")
        names.append(names_by_id[id(layer)] or f"layer{i}")
    if len(set(names)) != len(names):
        raise ValueError(f"attach_grapes.layers contains a layer twice: {names}")
    needs_weight_grad = mode.endswith("local") or r == "dfa"
    if needs_weight_grad:
        for layer, name in zip(hidden[1:] if r == "dfa" else hidden, names[1:] if r == "dfa" else names):
            if _is_analog(layer):
                if r == "dfa" and not hasattr(layer, "input_scale"):
                    raise ValueError(
                        f"attach_grapes(rule='dfa') on analog layer {name!r} ({type(layer).__name__}) needs an "
                        "'input_scale' attribute (the per-synapse factor scales the update's inputs); use the "
                        "layers of imc_grapes.backends"
                    )
                continue
            w = getattr(layer, "weight", None)
            if not isinstance(w, Tensor) or not w.requires_grad:
                raise ValueError(
                    f"attach_grapes(mode={mode!r}, rule={r!r}) scales weight gradients, but layer {name!r} "
                    f"({type(layer).__name__}) has no trainable 'weight'; use mode='propagated' (bp/fa)"
                )
    handle = GrapesHandle(
        model,
        hidden,
        names,
        mode,
        r,
        importance_fn if importance_fn is not None else exact_importance,
        outgoing_importance_fn if outgoing_importance_fn is not None else exact_outgoing_importance,
        refresh_every,
    )
    setattr(model, _ATTACHED_FLAG, handle)
    return handle
