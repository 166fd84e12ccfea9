"""Analog torch layers on a :class:`~crossbar.tiles.TileArray`: ``AnalogLinear`` and ``AnalogConv2d``.

They behave like ``nn.Linear`` / ``nn.Conv2d`` (same constructor arguments plus ``rpu_config`` and
``seed``). The forward pass and the input gradient go through the crossbar (forward / backward
periphery); the weights have **no float gradient**: during ``backward`` every call stashes ``(x, d)``
(layer input and gradient w.r.t. the layer output) on the module, and the optimizer step applies the
pulsed in-memory update ``tile.update(x, d, lr)`` (:class:`crossbar.optim.AnalogSGD`, or
:func:`crossbar.optim.analog_step` next to any torch optimizer). The bias is digital (a normal
``nn.Parameter`` with a float gradient).

Several backward passes before one step accumulate, as ``weight.grad`` does: the step applies every stashed pair
once (one ``tile.update`` each; aihwkit concatenates them into one update) and empties the stash. Any ``zero_grad``
drops them, as it forgets ``weight.grad``: ``zero_grad`` of :class:`~crossbar.optim.AnalogSGD`,
:func:`~crossbar.optim.analog_zero_grad`, and also torch's ``model.zero_grad()`` or a torch optimizer's
``zero_grad`` (``set_to_none`` either way), which reset the parameters' ``.grad`` only: the stash is tied to
``analog_ctx.grad`` (below; :meth:`AnalogModuleBase._stash_is_current`). So the torch loop
``model.zero_grad(); loss.backward(); opt.step()`` applies the last backward's update only, also after a backward
that had no step. The stash holds the tensors themselves, not copies: one modified in place between its backward
pass and the step (an input buffer refilled with the next micro-batch) makes the step raise ``RuntimeError``
rather than apply the new values.

How an optimizer finds the analog layer: every analog module owns ``analog_ctx``, an empty
``nn.Parameter`` that is an input of the layer's autograd function (so backward also runs for a first
layer whose input needs no gradient) and that maps back to the module via :func:`analog_module_of`.
Its ``.grad`` is ``None`` until a backward stashes a pair, then an empty tensor (``[0]``, no values) that marks
the stash: a ``zero_grad`` that resets it makes the stash stale, and the layer drops it. An ordinary optimizer
given ``analog_ctx`` updates nothing (an empty gradient of an empty parameter).

Freezing: ``analog_ctx.requires_grad`` stands for the analog weights' ``requires_grad``. A layer frozen by
``layer.requires_grad_(False)``, ``layer.weight.requires_grad_(False)`` or ``layer.weight.requires_grad = False``
(see :class:`AnalogWeight`) still sends the error to its input in backward, but stashes nothing, so no
optimizer step pulses its devices (torch's contract: a parameter that got no gradient is not updated).
As in torch, the flag counts at the time of the forward pass. aihwkit (1.1 and its current main branch)
differs: its ``AnalogFunction.backward`` stashes ``(x, d)`` whatever ``analog_ctx.requires_grad`` says, so
its ``AnalogSGD`` still updates a frozen layer whenever backward runs through it (its input needs a gradient).

Large outputs: the error sent through the backward MVM is the whole ``grad_out``. aihwkit 1.1's layers (its
``AnalogTile``, ``handle_output_bound``) zero it for every output whose forward value reached
``0.999 · out_scale · out_bound`` in the layer's units, i.e. after noise management rescaled the output back, which
is not where the ADC saturates: it zeroes outputs that bound management resolved (input 10 × 40 weights 0.9:
output 365, ideal 360, error zeroed) and every output above 12 of a perfect periphery, but passes the error of an
output the ADC clipped when noise management had scaled a small input up (no bound management, inputs 0.05: output
0.6, ideal 1.8). Its update uses the whole error, as here. To compare input gradients with aihwkit, keep the
outputs below that value (tests/crossbar/test_conv_vs_aihwkit.py).
"""

from __future__ import annotations

import numbers
import warnings
import weakref
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

from crossbar._im2col import im2col, output_size
from crossbar.config import CrossbarConfig
from crossbar.mapping import _check_size
from crossbar.tiles import _EXTRA_STATE, TileArray, check_finite_weights, check_move, check_state_device
from devices.base import check_seed
from devices.conductance import ConductanceMap

__all__ = ["AnalogModuleBase", "AnalogLinear", "AnalogConv2d", "AnalogFunction", "AnalogWeight",
           "analog_module_of", "analog_modules"]

_CTX_REGISTRY: "weakref.WeakValueDictionary[int, AnalogModuleBase]" = weakref.WeakValueDictionary()


def analog_module_of(param: Tensor) -> "AnalogModuleBase | None":
    """The analog module whose ``analog_ctx`` is ``param``, or ``None`` for any other tensor."""
    module = _CTX_REGISTRY.get(id(param))
    if module is not None and module.__dict__.get("_parameters", {}).get("analog_ctx") is param:
        return module
    return None


def analog_modules(model: nn.Module) -> list["AnalogModuleBase"]:
    """All analog layers of ``model`` (including itself), in ``model.modules()`` order."""
    return [m for m in model.modules() if isinstance(m, AnalogModuleBase)]


class AnalogFunction(torch.autograd.Function):
    """``y = tile.forward(x)``; backward: ``tile.backward(d)`` for ``x`` (if it needs a gradient) and, unless the
    layer is frozen (``analog_ctx`` did not require a gradient at the forward pass) or the backward pass asks for
    other gradients only (``torch.autograd.grad(loss, x)``, ``loss.backward(inputs=[x])``) or the batch is empty
    (no vector, nothing to update), stash ``(x, d)`` on the module for the optimizer's pulsed update."""

    @staticmethod
    def forward(ctx: Any, module: "AnalogModuleBase", analog_ctx: Tensor, x: Tensor) -> Tensor:  # noqa: ARG004
        ctx.module = module
        ctx.save_for_backward(x)
        return module.tile.forward(x)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[None, None, Tensor | None]:
        module: AnalogModuleBase = ctx.module
        (x,) = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        grad_x = module.tile.backward(grad_out) if ctx.needs_input_grad[2] else None
        # the layer trains, this pass asks for its gradient, and there is something to update (a batch of 0
        # vectors: nn.Linear's weight.grad is zeros, which SGD applies as no change; no tile update either)
        if ctx.needs_input_grad[1] and x.numel() > 0 and _weights_get_gradient(ctx):
            module._stash_pair(x.detach(), grad_out.detach())
        return None, None, grad_x


def _weights_get_gradient(ctx: Any) -> bool:
    """Whether the running backward pass computes the gradient of the layer's ``analog_ctx`` (its leaf node, the
    first of ``ctx.next_functions``: the module argument is no tensor): ``False`` for ``torch.autograd.grad`` /
    ``backward(inputs=...)`` that ask for other tensors only, which leave an ``nn.Linear``'s ``weight.grad`` as it
    is, so they must not stash an update either."""
    node = ctx.next_functions[0][0]
    will_execute = getattr(torch._C, "_will_engine_execute_node", None)
    return node is None or will_execute is None or bool(will_execute(node))


_DATA_GET = Tensor.data.__get__  # type: ignore[attr-defined]  # what __torch_function__ gets for t.data (==)


def _written_tensor(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The tensor that the torch function ``func`` writes into, or ``None`` if it writes into none: the first
    argument (or ``tensor=`` / ``input=``) of an in-place operation (a name ending in ``_``: ``Tensor.copy_``,
    ``nn.init.uniform_``, ``x += 1`` as ``add_``), of ``__setitem__`` and of the ``.data`` setter, or ``out=``."""
    out = kwargs.get("out")
    if isinstance(out, (tuple, list)):
        out = next((t for t in out if isinstance(t, AnalogWeight)), None)
    if out is not None:
        return out
    name = getattr(func, "__name__", "")
    writes = name in ("__setitem__", "__set__") or (name.endswith("_") and not name.startswith("__"))
    if not writes:
        return None
    return args[0] if args else kwargs.get("tensor", kwargs.get("input"))


class AnalogWeight(Tensor):
    """The copy of an analog layer's weights that ``layer.weight`` returns, whose ``requires_grad`` is the layer's.

    The values are a copy (every torch operation on it returns a plain ``Tensor``; pickling and ``copy.deepcopy`` give a
    plain ``Tensor``; ``.detach()`` and views are plain tensors over the copy: writable, and writing into them changes
    the copy's values only, never the devices). It is read-only: writing into it would not change the devices, so an
    in-place operation on it or on its ``.data`` (``nn.init.kaiming_uniform_(layer.weight)``,
    ``layer.weight.data.copy_(w)``, ``layer.weight[0] = 0``, ``layer.weight.data = w``, ``out=layer.weight``) raises
    ``RuntimeError`` naming :meth:`AnalogModuleBase.set_weights`, where ``nn.Linear`` would have changed its weights
    (``.clone()`` gives a plain copy to change). Reading ``requires_grad`` gives, and ``requires_grad = flag`` /
    ``requires_grad_(flag)`` set, the layer's ``analog_ctx.requires_grad``: whether backward stashes the layer's update
    (``False``: the layer is frozen, no pulses; see the module docstring). So ``layer.weight.requires_grad_(False)``
    freezes the layer as it would an ``nn.Linear``. The copy itself stays outside autograd (no ``grad_fn``, no
    ``.grad``).
    """

    _analog_ctx: Tensor
    _owner: str

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        """Run ``func`` on plain tensors (plain results), after refusing a write into an :class:`AnalogWeight`;
        ``.data`` of one is an :class:`AnalogWeight` too (read-only as well), outside autograd as torch's ``.data``:
        its ``requires_grad`` reads ``False`` and setting it does not freeze or unfreeze the layer."""
        kwargs = kwargs or {}
        target = _written_tensor(func, args, kwargs)
        if isinstance(target, AnalogWeight):
            name = getattr(func, "__name__", str(func))
            if name == "__set__":     # a property's setter: its descriptor names the attribute
                name = f"assigning .{getattr(getattr(func, '__self__', None), '__name__', 'an attribute')}"
            if kwargs.get("out") is not None:
                name = f"{name}(out=...)"
            layer = getattr(target, "_owner", "the analog layer")
            raise RuntimeError(f"{layer}.weight is a read-only copy of the devices' states: {name} on it would not "
                               f"change the layer; program new weights with {layer}.set_weights(w) (or change a "
                               "copy, layer.weight.clone())")
        with torch._C.DisableTorchFunctionSubclass():
            result = func(*args, **kwargs)
        if func == _DATA_GET and args and isinstance(args[0], AnalogWeight):
            # outside autograd as torch's .data: tied to a context of its own (requires_grad False), not the layer's
            return AnalogWeight.of(result, torch.empty(0), args[0]._owner)
        return result

    @classmethod
    def of(cls, values: Tensor, analog_ctx: Tensor, owner: str = "AnalogModuleBase") -> "AnalogWeight":
        """``values`` (any shape; not copied) as an :class:`AnalogWeight` tied to ``analog_ctx``; ``owner``: the
        layer's class name, for the error messages."""
        weight = values.as_subclass(cls)
        weight._analog_ctx = analog_ctx
        weight._owner = owner
        return weight

    @property
    def requires_grad(self) -> bool:
        """Whether the layer trains (its ``analog_ctx.requires_grad``)."""
        return self._analog_ctx.requires_grad

    @requires_grad.setter
    def requires_grad(self, requires_grad: bool) -> None:
        self._analog_ctx.requires_grad_(requires_grad)

    def requires_grad_(self, requires_grad: bool = True) -> "AnalogWeight":
        """Freeze (``False``) or unfreeze (``True``) the layer; returns this copy."""
        self._analog_ctx.requires_grad_(requires_grad)
        return self

    def __reduce_ex__(self, protocol: Any) -> Any:
        return self.as_subclass(Tensor).__reduce_ex__(protocol)

    def __deepcopy__(self, memo: dict[int, Any]) -> Tensor:
        return self.as_subclass(Tensor).clone()


class AnalogModuleBase(nn.Module):
    """Shared machinery of analog layers: the tile, the stash of ``(x, d)``, ``error_scale``, weight access.

    Attributes:
        tile: the :class:`TileArray` holding the weight matrix ``[out, in_flat]``.
        analog_ctx: empty parameter through which optimizers find this module.
        error_scale: ``None`` or a tensor ``[out]``: multiplies the stashed ``d`` (per output / channel)
            used by the pulsed update only, at the time the update runs; the gradient sent upstream is
            unchanged (the "local" GRAPES form).
    """

    tile: TileArray

    def _init_analog(self, tile: TileArray) -> None:
        self.tile = tile
        self.analog_ctx = nn.Parameter(torch.empty(0, device=tile.weight_tiles.device,
                                                   dtype=tile.weight_tiles.dtype))
        self._stash: list[tuple[Tensor, Tensor]] = []
        self._stash_versions: list[tuple[int, int]] = []     # the pairs' version counters when stashed
        self._stash_mark: tuple[Tensor, int] | None = None   # analog_ctx.grad and its version (see _stash_is_current)
        self.error_scale: Tensor | None = None
        self._register()

    def _register(self) -> None:
        _CTX_REGISTRY[id(self.analog_ctx)] = self

    def _apply(self, fn: Any, recurse: bool = True) -> "AnalogModuleBase":
        """``nn.Module._apply`` (``.to``, ``.to_empty``, ``.cuda``, ...), refusing the meta device before anything
        moves (:func:`~crossbar.tiles.check_move`: the layer needs real device states)."""
        ctx = self._parameters.get("analog_ctx")
        if ctx is not None:
            check_move(type(self).__name__, fn, ctx)
        return super()._apply(fn, recurse)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, local_metadata: dict[str, Any],
                              strict: bool, missing_keys: list[str], unexpected_keys: list[str],
                              error_msgs: list[str]) -> None:
        """``nn.Module``'s, after the tile's check of its saved extra state
        (:meth:`~crossbar.tiles.TileState._check_saved_state`, the same ``ValueError`` the tile raises when it
        loads): torch loads a module's own parameters (the bias) before its children's, so a state refused at the
        tile had already replaced the layer's bias; now the layer is left as it was."""
        tile_prefix = f"{prefix}tile."
        self.tile._check_saved_state(state_dict.get(tile_prefix + _EXTRA_STATE),
                                     f"{type(self.tile).__name__} {tile_prefix[:-1]!r}")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        if "analog_ctx" in self._parameters:
            self._register()
        if "_stash" in self.__dict__:   # copied or unpickled pairs are new tensors: their versions start afresh
            self._stash_versions = [(x._version, d._version) for x, d in self._stash]
            # a copied / unpickled analog_ctx has no .grad (torch copies a parameter's values only): the copy's
            # pending pairs get a fresh mark, so they stay pending as in the original
            self._stash_mark = None
            if self._stash and "analog_ctx" in self._parameters:
                self._mark_stash()

    # ------------------------------------------------------------------ weights
    @property
    def weight(self) -> "AnalogWeight":
        """A read of the weights: a new copy on every access (:meth:`get_weights`, the states the MVMs see, exactly,
        no read noise), shaped as the torch layer's ``weight`` (``[out, in]``; ``[out, C_in, kh, kw]`` for a
        convolution), in weight units; ``requires_grad`` is the layer's (``analog_ctx.requires_grad``, see
        :class:`AnalogWeight`).

        Not the devices' storage: writing into the copy itself raises (:class:`AnalogWeight`), and what is derived
        from it — ``.detach()``, a view (``weight[0]``, ``weight.view(-1)``, ``weight.transpose(0, 1)``),
        ``.clone()`` — is a plain tensor over the copy (or its own, for ``.clone()``), which can be changed, but
        changes that tensor only, never the layer. To change
        the weights program them: ``w = layer.weight.clone()``, change ``w``, ``layer.set_weights(w)``
        (:meth:`set_weights`: clipped into the device bounds, with the device's write noise)."""
        return AnalogWeight.of(self.get_weights(), self.analog_ctx, type(self).__name__)

    def get_weights(self) -> Tensor:
        """Exact copy of the weights (no read noise), shaped like the torch layer's ``weight``."""
        return self.tile.read().reshape(self._weight_shape())

    def set_weights(self, weight: Tensor, write_noise: bool = True, clip: bool = True) -> None:
        """Program the tiles with ``weight`` (torch layer's shape; clipped into the device bounds unless
        ``clip=False``; ``write_noise``, ``clip``: see :meth:`TileArray.program`). ``ValueError`` for a wrong
        shape, or a NaN / ±Inf entry (:func:`~crossbar.tiles.check_finite_weights`; the tiles are left as they
        were)."""
        shape = self._weight_shape()
        if tuple(weight.shape) != shape:
            raise ValueError(f"{type(self).__name__}.set_weights: expected shape {shape}, got "
                             f"{tuple(weight.shape)}")
        check_finite_weights(f"{type(self).__name__}.set_weights", weight.detach())
        self.tile.program(weight.reshape(self.tile.out_features, self.tile.in_features), write_noise, clip)

    def _weight_shape(self) -> tuple[int, ...]:
        raise NotImplementedError

    def conductances(self, cmap: ConductanceMap | None = None) -> tuple[Tensor, Tensor]:
        """The weights as differential-pair conductances ``(G⁺, G⁻)`` in µS, each shaped like :meth:`get_weights`,
        on the layer's device and dtype: :meth:`ConductanceMap.to_pair <devices.ConductanceMap.to_pair>` of the
        exact weights (the states the MVMs see, no read noise), one device of each pair at ``g_min_uS``.

        Args:
            cmap: the weight ↔ µS map; ``None``: ``ConductanceMap(w_max=max(w_max, -w_min))`` with the bounds of
                the layer's device config (``rpu_config.device.w_max`` / ``.w_min``, the mean of the per-device
                bounds the states are clipped into) and the map's default ``g_min_uS = 0.1``, ``g_max_uS = 25``.
                A weight beyond ``±cmap.w_max`` (on a device whose sampled bound lies beyond the mean, with
                ``w_max_dtod`` / ``w_min_dtod`` > 0; a state set with ``clip=False``, or by the exact update of
                ``pulse_type="none"``, which knows no bounds) saturates at ``g_max_uS``; pass a map with a larger
                ``w_max`` (e.g. the largest ``|weight|``) to map every weight exactly.

        ``cmap.from_pair(G⁺, G⁻)`` gives the weights back where none saturates, and ``row_sums(g_offset=g_min_uS /
        scale_uS) · scale_uS`` equals ``(G⁺ + G⁻).sum`` over the inputs.
        """
        if cmap is None:
            device = self.tile.config.device
            cmap = ConductanceMap(w_max=max(float(device.w_max), -float(device.w_min)))
        elif not isinstance(cmap, ConductanceMap):
            raise ValueError(f"{type(self).__name__}.conductances: cmap must be a devices.ConductanceMap or None, got "
                             f"{cmap!r}")
        return cmap.to_pair(self.get_weights())

    def row_sums(self, mode: str = "exact", signed: bool = False, g_offset: float = 0.0) -> Tensor:
        """``[out]`` row sums of the tile (see :meth:`TileArray.row_sums`)."""
        return self.tile.row_sums(mode=mode, signed=signed, g_offset=g_offset)

    def col_sums(self, mode: str = "exact", signed: bool = False, g_offset: float = 0.0) -> Tensor:
        """``[in_flat]`` column sums of the tile (see :meth:`TileArray.col_sums`)."""
        return self.tile.col_sums(mode=mode, signed=signed, g_offset=g_offset)

    def _check_input(self, x: object) -> None:
        """``TypeError`` unless ``x`` is a tensor (a list or a numpy array failed with an ``AttributeError`` on
        ``.dim``), ``ValueError`` unless it lies on the layer's device (the MVM failed deep in the periphery with
        torch's "Expected all tensors to be on the same device"). No host read: device and type are metadata."""
        if not isinstance(x, Tensor):
            raise TypeError(f"{type(self).__name__}: input must be a torch.Tensor, got {type(x).__name__}")
        device = self.tile._buffers["weight_tiles"].device   # type: ignore[union-attr]
        if x.device != device:
            raise ValueError(f"{type(self).__name__}: input must be on the layer's device, {device}, got {x.device} "
                             f"(move the input with x.to('{device}'), or the layer with .to(device))")

    def _check_dtype(self, x: Tensor) -> None:
        """``ValueError`` unless ``x`` has the layer's dtype (as ``nn.Linear`` / ``nn.Conv2d`` and aihwkit refuse
        another dtype; the MVM would fail deep in the periphery, or for an integer input in ``torch.finfo``)."""
        dtype = self.tile._buffers["weight_tiles"].dtype   # type: ignore[union-attr]
        if x.dtype != dtype:
            raise ValueError(f"{type(self).__name__}: input dtype must be the layer's, {dtype}, got {x.dtype} (convert "
                             f"the input with x.to({dtype}), or the layer with .to(dtype))")

    # ------------------------------------------------------------------ update
    def _analog_mvm(self, x2: Tensor) -> Tensor:
        self._register()
        return AnalogFunction.apply(self, self.analog_ctx, x2)

    @property
    def stashed(self) -> int:
        """Number of stashed ``(x, d)`` pairs waiting for the next update (0 after a ``zero_grad`` that reset
        ``analog_ctx.grad``: see :meth:`_stash_is_current`)."""
        self._drop_stale_stash()
        return len(self._stash)

    def pending_pairs(self) -> tuple[tuple[Tensor, Tensor], ...]:
        """The stashed ``(x, d)`` pairs (layer inputs ``[..., in]``, output gradients ``[..., out]``; detached,
        ``d`` not yet multiplied by ``error_scale``) that the next :meth:`analog_update` will apply.

        Checked as :meth:`analog_update` checks them (``RuntimeError`` for a pair modified in place since its
        backward pass; pairs that a ``zero_grad`` dropped are gone): the backends that apply the update themselves
        (GRAPES's ``CrossbarLayer``, the replicas' saturation probe) read the pairs here."""
        return tuple(self._checked_stash("pending_pairs"))

    def clear_stash(self) -> None:
        """Drop the stashed ``(x, d)`` pairs without updating."""
        self._stash.clear()
        self._stash_versions.clear()
        self._stash_mark = None
        self.__dict__["_unapplied_drops"] = 0     # plain dict write: nn.Module.__setattr__ is slow, this runs per step

    def _stash_is_current(self) -> bool:
        """Whether the stash still stands for the gradient of ``analog_ctx``, i.e. no ``zero_grad`` reset it since
        the first pair was stashed.

        torch's contract is that ``zero_grad`` forgets the gradients of the backward passes before it, and the
        stash is this layer's gradient. ``optimizer.zero_grad()`` of :class:`~crossbar.optim.AnalogSGD` and
        :func:`~crossbar.optim.analog_zero_grad` drop it themselves, but torch's ``nn.Module.zero_grad`` (and a
        torch optimizer's) only resets the parameters' ``.grad``. So the first stashed pair marks ``analog_ctx``:
        its ``.grad`` becomes an empty tensor (``[0]``, no values; an existing one is kept), remembered with its
        version counter. ``zero_grad(set_to_none=True)`` replaces it by ``None`` and ``set_to_none=False`` zeroes
        it in place (a new version): either way the mark no longer matches and the stash is stale. Reading the
        mark is host bookkeeping (object identity and version counter), no device read."""
        mark = self._stash_mark
        if mark is None:
            return not self._stash
        grad = self.analog_ctx.grad
        return grad is mark[0] and grad._version == mark[1]

    def _drop_stale_stash(self) -> None:
        """Drop the stash when a ``zero_grad`` reset ``analog_ctx.grad`` since it began (:meth:`_stash_is_current`).

        The second such drop in a row (no update, :meth:`clear_stash` or ``AnalogSGD.zero_grad`` in between) warns,
        once per layer: the layer has been trained by a loop that never applies its pulsed update, which is what a
        plain torch optimizer (``torch.optim.SGD``, ``Adam``) does on its own (it moves the digital parameters only,
        see the module docstring). One drop is torch's ``zero_grad`` contract (a backward without a step) and stays
        silent."""
        if self._stash and not self._stash_is_current():
            drops = self.__dict__.get("_unapplied_drops", 0) + 1
            self.clear_stash()
            self.__dict__["_unapplied_drops"] = drops
            if drops == 2 and not self.__dict__.get("_warned_unapplied", False):
                self.__dict__["_warned_unapplied"] = True
                warnings.warn(
                    f"{type(self).__name__}: zero_grad dropped the stashed pulsed update of two backward passes in a "
                    "row without applying it, so the analog weights do not train; a torch optimizer (torch.optim.SGD, "
                    "Adam, ...) updates the digital parameters only: use crossbar.AnalogSGD, or call "
                    "crossbar.analog_step(model, lr) after its step (to compute gradients only, freeze the layer with "
                    "layer.requires_grad_(False))", stacklevel=2)

    def _mark_stash(self) -> None:
        """Mark the start of a stash on ``analog_ctx.grad`` (an empty tensor, made if there is none)."""
        ctx = self.analog_ctx
        grad = ctx.grad
        if grad is None:
            grad = torch.zeros_like(ctx)
            ctx.grad = grad
        self._stash_mark = (grad, grad._version)

    def _stash_pair(self, x: Tensor, d: Tensor) -> None:
        """Stash ``(x, d)`` (references, not copies) with their version counters (see :meth:`_checked_stash`),
        after dropping a stash that a ``zero_grad`` made stale; the first pair marks ``analog_ctx.grad``
        (:meth:`_stash_is_current`)."""
        self._drop_stale_stash()
        if not self._stash:
            self._mark_stash()
        self._stash.append((x, d))
        self._stash_versions.append((x._version, d._version))

    def _checked_stash(self, method: str = "analog_update") -> list[tuple[Tensor, Tensor]]:
        """The stashed pairs, after dropping a stash that a ``zero_grad`` made stale (:meth:`_stash_is_current`) and
        checking that none was modified in place since its backward pass (``method``: the reader the error names).
        Every reader of the pairs' values goes through it.

        The stash holds the layer input and output gradient themselves (no copy), as autograd's saved tensors do;
        a pair changed in place before the update (an input buffer refilled with the next micro-batch, ``x.mul_``)
        would otherwise be applied with its new values, where ``nn.Linear``'s ``weight.grad`` keeps the values of
        the backward pass. ``RuntimeError`` then, as autograd raises for a saved tensor modified before backward.
        """
        self._drop_stale_stash()
        versions = getattr(self, "_stash_versions", None)
        if versions is not None and len(versions) == len(self._stash):
            for k, ((x, d), (vx, vd)) in enumerate(zip(self._stash, versions)):
                if x._version != vx or d._version != vd:
                    what = "input x" if x._version != vx else "output gradient d"
                    raise RuntimeError(f"{type(self).__name__}.{method}: the {what} of stashed pair {k} was "
                                       "modified in place after its backward pass (its pulsed update would use the "
                                       "new values); pass a fresh tensor per batch, or step before modifying it")
        return self._stash

    @torch.no_grad()
    def analog_update(self, lr: float | Tensor) -> int:
        """Apply the pulsed update for every stashed ``(x, d)`` (``d`` times ``error_scale`` if set).

        Returns the number of updates applied; the stash is emptied. A pair stashed before the layer moved to
        another device (``model.to(device)`` between ``backward`` and ``step``) is moved to the tile's device, as
        ``module.to`` moves a parameter's ``.grad``; a dtype change is the tile update's (it computes in its own).
        """
        scale = self.error_scale
        tile_device = self.tile.weight_tiles.device
        if scale is not None and scale.numel() != self.tile.out_features:
            raise ValueError(f"{type(self).__name__}.error_scale must have {self.tile.out_features} "
                             f"elements (one per output), got shape {tuple(scale.shape)}")
        n = 0
        for x, d in self._checked_stash():
            x, d = x.to(tile_device), d.to(tile_device)       # no-op (no copy) on the same device
            if scale is not None:
                d = d * scale.reshape(-1).to(device=d.device, dtype=d.dtype)
            self.tile.update(x, d, lr)
            n += 1
        self.clear_stash()
        return n


class AnalogLinear(AnalogModuleBase):
    """``nn.Linear`` on crossbar tiles: ``y = W x + b`` with ``W: [out_features, in_features]`` analog.

    Args:
        in_features, out_features, bias: as ``nn.Linear`` (the bias is digital).
        rpu_config: :class:`CrossbarConfig` (default ``CrossbarConfig()``).
        device, dtype: as ``nn.Linear`` (not the meta device: the layer needs real device states, ``ValueError``).
        seed: seed of the tile's generator (initial weights, device spread, noise); ``None`` draws one from
            torch's global generator.

    The weights are initialised like ``nn.Linear`` (``U(-1/sqrt(in), 1/sqrt(in))``, weight and bias) from
    the tile's generator, then programmed (clipped into the device bounds).
    Shapes: ``x: [..., in_features] -> [..., out_features]``.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 rpu_config: CrossbarConfig | None = None, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None, seed: int | None = None) -> None:
        super().__init__()
        in_features = _check_size("AnalogLinear", "in_features", in_features)
        out_features = _check_size("AnalogLinear", "out_features", out_features)
        if seed is not None:
            check_seed("AnalogLinear", seed)
        if not isinstance(bias, bool):
            raise ValueError(f"AnalogLinear.bias must be true or false, got {bias!r}")
        self.in_features = in_features
        self.out_features = out_features
        device = check_state_device("AnalogLinear.device", device)
        tile = TileArray(out_features, in_features, rpu_config, device=device, dtype=dtype, seed=seed,
                         size_names=("AnalogLinear", "out_features", "in_features"))    # a refusal names the layer
        self._init_analog(tile)
        w_dtype = tile.weight_tiles.dtype
        bound = 1.0 / in_features ** 0.5
        gen = tile.generator
        w = (torch.rand(out_features, in_features, generator=gen, device=gen.device, dtype=w_dtype) * 2 - 1) * bound
        tile.program(w)
        if bias:
            b = (torch.rand(out_features, generator=gen, device=gen.device, dtype=w_dtype) * 2 - 1) * bound
            self.bias = nn.Parameter(b)
        else:
            self.register_parameter("bias", None)

    def _weight_shape(self) -> tuple[int, ...]:
        return (self.out_features, self.in_features)

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        if x.dim() < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"AnalogLinear: expected input [..., {self.in_features}] (in_features), got "
                             f"{tuple(x.shape)}")
        self._check_dtype(x)
        lead = x.shape[:-1]
        y = self._analog_mvm(x.reshape(-1, self.in_features)).reshape(*lead, self.out_features)
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def _conv_pair(name: str, value: Any) -> tuple[int, int]:
    """``value`` (an int, or a pair of ints, as ``nn.Conv2d`` takes them) as a pair; ``ValueError`` naming
    ``name`` otherwise (e.g. a string, a float, or a 3-tuple, which ``_pair`` would pass through)."""
    pair = _pair(value)
    if (isinstance(value, str) or not isinstance(pair, (tuple, list)) or len(pair) != 2
            or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in pair)):
        hint = " (zero padding given as numbers, or 'valid' / 'same')" if name == "padding" else ""
        raise ValueError(f"AnalogConv2d.{name} must be an int or a pair of ints{hint}, got {value!r}")
    return int(pair[0]), int(pair[1])


def _string_padding(mode: str, kernel_size: tuple[int, int], stride: tuple[int, int],
                    dilation: tuple[int, int]) -> tuple[int, int]:
    """``nn.Conv2d``'s string paddings as the equal per-axis padding this layer takes: ``'valid'`` is ``(0, 0)``;
    ``'same'`` (stride 1, as ``nn.Conv2d`` requires) is ``dilation·(kernel − 1) / 2`` per axis, where that total is
    even. An odd total needs one more row or column on one side than on the other, which ``nn.Conv2d`` does but
    this layer (like aihwkit's) does not: ``ValueError``, with the way around it."""
    if mode == "valid":
        return 0, 0
    if mode != "same":
        _conv_pair("padding", mode)                         # raises: the usual message, naming the two modes
    if stride != (1, 1):
        raise ValueError(f"AnalogConv2d.padding='same' needs stride 1 (as nn.Conv2d), got stride {stride}")
    totals = tuple(d * (k - 1) for k, d in zip(kernel_size, dilation))
    if any(t % 2 for t in totals):
        raise ValueError(
            f"AnalogConv2d.padding='same' with kernel_size {kernel_size} and dilation {dilation} needs "
            f"{totals} zero rows/columns in all, one more on one side than on the other, which this layer does not "
            "support (it pads both sides of an axis equally, as aihwkit's): pad the input with F.pad and use "
            "padding=0, or use an odd kernel")
    return totals[0] // 2, totals[1] // 2


class AnalogConv2d(AnalogModuleBase):
    """``nn.Conv2d`` on crossbar tiles via im2col: the kernel is the matrix ``[out, C_in*kh*kw]``.

    Args: as ``nn.Conv2d``, in its order (``groups`` must be 1 and ``padding_mode`` ``"zeros"``; ``padding`` as
    numbers, ``"valid"``, or ``"same"`` where that pads both sides of each axis equally: stride 1 and an even
    ``dilation·(kernel − 1)``, e.g. any odd kernel) plus ``rpu_config``, ``seed``.
    Each output position is one MVM (``x`` unfolded as ``F.unfold`` does: :func:`crossbar._im2col.im2col`), so
    one batch of ``B`` images with ``L`` output positions is ``B*L`` vectors for forward, backward and the update
    (as aihwkit).
    Shapes: ``x: [B, C_in, H, W]`` (or ``[C_in, H, W]``) ``-> [B, C_out, H_out, W_out]``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] | str = 0,
                 dilation: int | tuple[int, int] = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", rpu_config: CrossbarConfig | None = None,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None,
                 seed: int | None = None) -> None:
        super().__init__()
        in_channels = _check_size("AnalogConv2d", "in_channels", in_channels)
        out_channels = _check_size("AnalogConv2d", "out_channels", out_channels)
        if seed is not None:
            check_seed("AnalogConv2d", seed)
        if not isinstance(bias, bool):
            raise ValueError(f"AnalogConv2d.bias must be true or false, got {bias!r}")
        if isinstance(groups, bool) or groups != 1:
            raise ValueError(f"AnalogConv2d.groups must be 1 (grouped convolutions are not supported), got {groups!r}")
        if padding_mode != "zeros":
            raise ValueError(f"AnalogConv2d.padding_mode must be 'zeros', got {padding_mode!r}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _conv_pair("kernel_size", kernel_size)
        self.stride = _conv_pair("stride", stride)
        self.dilation = _conv_pair("dilation", dilation)
        for name in ("kernel_size", "stride", "dilation"):
            if min(getattr(self, name)) < 1:
                raise ValueError(f"AnalogConv2d.{name} must be >= 1, got {getattr(self, name)}")
        if isinstance(padding, str):
            padding = _string_padding(padding, self.kernel_size, self.stride, self.dilation)
        self.padding = _conv_pair("padding", padding)
        if min(self.padding) < 0:
            raise ValueError(f"AnalogConv2d.padding must be >= 0, got {self.padding}")
        fan_in = in_channels * self.kernel_size[0] * self.kernel_size[1]
        device = check_state_device("AnalogConv2d.device", device)
        kh, kw = self.kernel_size      # a refused tile sum names the sizes the user set, not the matrix's fan_in
        columns = (f"in_channels·kernel_size (in_channels {in_channels} × kernel_size {kh}×{kw}: the columns of its "
                   "weight matrix)")
        tile = TileArray(out_channels, fan_in, rpu_config, device=device, dtype=dtype, seed=seed,
                         size_names=("AnalogConv2d", "out_channels", columns))
        self._init_analog(tile)
        w_dtype = tile.weight_tiles.dtype
        bound = 1.0 / fan_in ** 0.5
        gen = tile.generator
        w = (torch.rand(out_channels, fan_in, generator=gen, device=gen.device, dtype=w_dtype) * 2 - 1) * bound
        tile.program(w)
        if bias:
            b = (torch.rand(out_channels, generator=gen, device=gen.device, dtype=w_dtype) * 2 - 1) * bound
            self.bias = nn.Parameter(b)
        else:
            self.register_parameter("bias", None)

    def _weight_shape(self) -> tuple[int, ...]:
        return (self.out_channels, self.in_channels, *self.kernel_size)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """Spatial output size for an input of ``height x width``."""
        return output_size((height, width), self.kernel_size, self.dilation, self.padding, self.stride)

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        if x.dim() not in (3, 4) or x.shape[-3] != self.in_channels:
            raise ValueError(f"AnalogConv2d: expected input [B, {self.in_channels}, H, W] or [{self.in_channels}, H, W]"
                             f" (in_channels {self.in_channels}), got {tuple(x.shape)}")
        unbatched = x.dim() == 3
        if unbatched:
            x = x.unsqueeze(0)
        self._check_dtype(x)
        batch = x.shape[0]
        h_out, w_out = self.output_size(x.shape[2], x.shape[3])
        if h_out < 1 or w_out < 1:
            raise ValueError(f"AnalogConv2d: input of spatial size {tuple(x.shape[2:])} is smaller than the kernel "
                             f"{self.kernel_size} (dilation {self.dilation}, padding {self.padding}): no output "
                             "position")
        n_pos = h_out * w_out
        x2 = im2col(x, self.kernel_size, self.dilation, self.padding, self.stride)   # [B*L, C_in*kh*kw]
        y = self._analog_mvm(x2)                                        # [B*L, out]
        y = y.reshape(batch, n_pos, self.out_channels).transpose(1, 2)
        y = y.reshape(batch, self.out_channels, h_out, w_out)
        if self.bias is not None:
            y = y + self.bias.view(1, -1, 1, 1)
        return y.squeeze(0) if unbatched else y

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, bias={self.bias is not None}")
