"""The aihwkit backend: analog layers on IBM's simulator (imported lazily, only in this module).

* Layers: ``aihwkit.nn.AnalogLinear`` / ``AnalogConv2d`` with a ``SingleRPUConfig`` built by
  ``crossbar.to_aihwkit_rpu_config(crossbar_config_from(settings))``, so both simulators get the same device
  and periphery. The device-to-device spread is seeded (``construction_seed``, one per tile of a layer larger than
  a tile: aihwkit would give all tiles of an array the same draws); aihwkit's C++ random number
  generator (cycle-to-cycle noise, pulse trains, read noise) is not seedable from Python, so aihwkit runs are
  not bit-reproducible.
* Update: :meth:`AihwkitLayer.apply_update` takes the ``(x, d)`` aihwkit stored in each tile's
  ``AnalogContext`` during backward, multiplies them by GRAPES's ``input_scale`` / ``error_scale`` (local form,
  DFA; the propagated form already modulated ``d`` through the output-gradient hook) and calls the tile's own
  pulsed ``update`` (what ``aihwkit.optim.AnalogSGD.step`` does, plus the scaling).
* Freezing, as on the crossbar backend: a tile whose ``analog_ctx.requires_grad`` is false (the whole layer by
  ``layer.requires_grad_(False)``, which also freezes the digital bias; one tile by its ``analog_ctx``) still
  sends the error to the layer's input, but gets no pulses. aihwkit itself stashes ``(x, d)`` in backward
  whatever the flag says (its ``AnalogSGD`` then updates a frozen layer); here a tile that was frozen at any
  grad-enabled forward since the last update or :meth:`~AihwkitLayer.clear` is skipped by
  :meth:`~AihwkitLayer.has_pending`, :meth:`~AihwkitLayer.pending_update` and :meth:`~AihwkitLayer.apply_update`,
  its stash dropped. The flag counts at the forward pass, as in torch and on the crossbar backend; the one
  difference: the crossbar backend keeps the pairs of the trainable forwards of a step whose forwards saw
  both flags, while aihwkit's stash does not tell the forwards apart, so here the tile skips the whole step.
* ``zero_grad``: torch's ``model.zero_grad()`` (or a torch optimizer's) drops the pending update, as it forgets
  the digital gradients and as on the crossbar backend: aihwkit gives its contexts no ``.grad``, so the layer
  ties each tile's stash to a zero ``.grad`` it sets on the tile's context (:meth:`AihwkitLayer._stash_is_current`).
* A backward pass for other gradients only (``torch.autograd.grad(loss, x)``, ``loss.backward(inputs=[x])``) leaves
  the pending update as it was, as it leaves an ``nn.Linear``'s ``weight.grad`` and as on the crossbar backend:
  what aihwkit's backward stores in such a pass is cut off when the pass ends (:meth:`AihwkitLayer._before_stash`).
* Importance: ``exact`` only. An all-ones forward read of an aihwkit tile gives the *signed* row sum
  ``Σ_j w_ij`` of a single signed array, not the differential-pair sum ``Σ_j (G⁺ + G⁻)`` that GRAPES needs;
  the ``array`` source is implemented on the crossbar backend.
* Costs: aihwkit has no hardware counters, so they are counted analytically from the shapes: per vector one
  pass per tile (bound-management repeats are not visible, so the passes and conversions are lower bounds),
  a backward MVM only where the layer's input needs a gradient (as the crossbar backend; aihwkit itself also
  computes it for the first layer, where a chip would not). Pulses are the *expected* number of coincidences
  of aihwkit's pulse trains for the stored ``(x, d)`` (``Σ_samples BL · Σ_i q_i · Σ_j p_j``, from
  ``crossbar.pulse_probabilities``, whose semantics were validated against aihwkit), not a count of the pulses
  aihwkit fired (its CPU tiles do not report them).
* aihwkit's pulsed tiles run on CPU only (the PyPI wheel has no CUDA): building on ``cuda`` raises.

Same as the crossbar backend (tests/imc_grapes/test_backends_aihwkit_vs_crossbar.py): the device, periphery,
update rule and tile size of ``cfg.analog``; the initial weights, clipped into each device's own bounds; the digital
bias (aihwkit ``digital_bias=True``, trained by the digital optimizer); no weight remapping or output scaling
(``weight_scaling_omega = 0``); ``cfg.lr`` as the pulsed update's learning rate; GRAPES's exact importance.
Differences that remain, by design or from aihwkit 1.1:

* not reproducible (aihwkit's C++ random generator is not seedable, see above);
* a layer that does not divide evenly into tiles: aihwkit makes the first pieces one line larger, the crossbar
  backend pads the last piece (same tile count);
* :meth:`AihwkitLayer.set_weights` / ``Network.write_weights`` always clip into the device bounds and always draw
  the write noise (``clip=False`` / ``write_noise=False`` act on the crossbar backend only), so the inference
  evaluation's noisy weights are clipped into the training device's bounds here;
* ``Network.state_kept`` (``state_dict`` round trip) puts the weights back exactly on devices without write noise;
  with write noise aihwkit programs the saved noisy weights as the new device states and draws new noise on top;
* only the ``exact`` importance; hardware costs analytic (bound-management repeats not counted), pulses expected;
* ``IOParameters.bm_test_negative_bound=False`` is refused by the converter (aihwkit's bound management then
  depends on the order of the outputs); the settings of a run never set it.
"""
from __future__ import annotations

import copy
from typing import Any, cast

import torch
from torch import Tensor, nn

import crossbar

from .costs import COST_KINDS
from .layers import AnalogLayer

__all__ = ["AihwkitLayer", "aihwkit_rpu_config", "check_aihwkit_device", "make_aihwkit_layer"]

_K = {name: i for i, name in enumerate(COST_KINDS)}


def check_aihwkit_device(device: torch.device | str) -> None:
    """Raise ``ValueError`` unless ``device`` is the CPU (aihwkit's pulsed tiles are CPU-only here)."""
    dev = torch.device(device)
    if dev.type != "cpu":
        raise ValueError(
            f"backend 'aihwkit' runs on the CPU only (the aihwkit wheel has no CUDA build and its pulsed "
            f"tiles are C++ CPU code), got device {str(dev)!r}; use --device cpu, or --backend crossbar for "
            "the GPU")


def aihwkit_rpu_config(cfg: crossbar.CrossbarConfig, construction_seed: int) -> Any:
    """The aihwkit ``SingleRPUConfig`` of ``cfg`` with the device-to-device draws seeded."""
    rpu = crossbar.to_aihwkit_rpu_config(cfg)
    rpu = copy.deepcopy(rpu)
    if hasattr(rpu.device, "construction_seed"):
        rpu.device.construction_seed = int(construction_seed) % (2 ** 31 - 1) + 1
    return rpu


def _tile_seed(seed: int, k: int) -> int:
    """Construction seed of the ``k``-th tile of a layer with seed ``seed`` (tile 0: ``seed`` itself)."""
    return seed if k == 0 else (int(seed) * 1_000_003 + 104_729 * k) % (2 ** 62)


def _seed_tile_array(inner: Any, config: crossbar.CrossbarConfig, seed: int) -> None:
    """Give every tile of an aihwkit tile array (a layer larger than one tile) its own construction seed.

    aihwkit builds all tiles of a ``TileModuleArray`` from one rpu config, so with a fixed ``construction_seed``
    every tile would draw the *same* device-to-device spread (the same map of ``dw_min``, bounds, ... repeated in
    each tile), unlike the crossbar backend (and aihwkit with an unseeded config), whose devices all draw
    independently. Tiles 1, 2, ... are rebuilt here from configs seeded with :func:`_tile_seed`."""
    module = inner.analog_module
    if not hasattr(module, "array"):
        return
    n_out = len(module.out_sizes)
    for i, (in_size, in_tiles) in enumerate(zip(module.in_sizes, module.array)):
        for j, out_size in enumerate(module.out_sizes):
            k = i * n_out + j
            if k:
                rpu = aihwkit_rpu_config(config, _tile_seed(seed, k))
                in_tiles[j] = rpu.tile_class(out_size, in_size, rpu, bias=False)


def _pass_computes_grad_of(leaf: Tensor) -> bool:
    """Whether the running backward pass computes the gradient of ``leaf`` (a tensor that requires it): ``False``
    for ``torch.autograd.grad`` / ``backward(inputs=...)`` that ask for other tensors only; ``True`` where this
    torch cannot tell (as :mod:`crossbar.modules` decides for the crossbar backend's stash)."""
    will_execute = getattr(torch._C, "_will_engine_execute_node", None)
    return will_execute is None or bool(will_execute(torch.autograd.graph.get_gradient_edge(leaf).node))


def _device_states(tile: Any) -> Tensor:
    """The device states of one aihwkit tile, ``[out, in]`` float64: on a device with write noise its hidden
    ``persistent_weights`` (what the pulses change; ``get_weights`` returns them plus the write noise, drawn anew at
    every update), else its weights. What the saturation probe compares, as the crossbar backend's
    ``read(hidden=True)``."""
    if "persistent_weights" in tile.tile.get_hidden_parameter_names():
        return tile.get_hidden_parameters()["persistent_weights"].to(torch.float64)
    return tile.get_weights()[0].to(torch.float64)


class AihwkitLayer(AnalogLayer):
    """An :class:`AnalogLayer` on an aihwkit ``AnalogLinear`` / ``AnalogConv2d`` (see the module docstring).

    Args:
        inner: the aihwkit layer (already programmed).
        config: the crossbar config it was built from (update rule and device granularity for the
            expected pulse count).
        backward_mode, feedback: see :class:`AnalogLayer`.
    """

    inner: Any  # aihwkit's AnalogLinear / AnalogConv2d (aihwkit has no type information)
    count_buffer: Tensor

    def __init__(self, inner: nn.Module, config: crossbar.CrossbarConfig, backward_mode: str = "array",
                 feedback: Tensor | None = None) -> None:
        from aihwkit.nn import AnalogConv2d, AnalogLinear

        if isinstance(inner, AnalogLinear):
            kind, shape = "linear", (inner.out_features, inner.in_features)
            n_in = inner.in_features
        elif isinstance(inner, AnalogConv2d):
            kind = "conv"
            shape = (inner.out_channels, inner.in_channels, *inner.kernel_size)
            n_in = inner.in_channels * inner.kernel_size[0] * inner.kernel_size[1]
        else:
            raise ValueError(f"AihwkitLayer.inner must be an aihwkit AnalogLinear or AnalogConv2d, got "
                             f"{type(inner).__name__}")
        super().__init__(inner, kind, n_in, shape[0], shape, backward_mode, feedback, device="cpu")
        self.config = config
        self.register_buffer("count_buffer", torch.zeros(len(COST_KINDS), dtype=torch.float64))
        module = inner.analog_module
        if hasattr(module, "array"):  # TileModuleArray: array[in_block][out_block]
            self._tiles = []
            in_start = 0
            for in_size, in_tiles in zip(module.in_sizes, module.array):
                out_start = 0
                for out_size, tile in zip(module.out_sizes, in_tiles):
                    self._tiles.append((tile, slice(out_start, out_start + out_size),
                                        slice(in_start, in_start + in_size)))
                    out_start += out_size
                in_start += in_size
            self._n_in_blocks, self._n_out_blocks = len(module.in_sizes), len(module.out_sizes)
        else:
            self._tiles = [(module, slice(0, self.out_features), slice(0, self.in_features))]
            self._n_in_blocks = self._n_out_blocks = 1
        self._forward_counts, self._backward_counts = self._per_vector_counts()
        # per tile: frozen (analog_ctx.requires_grad false) at a grad-enabled forward since the last update / clear
        self._frozen_seen = [False] * len(self._tiles)
        # per tile: the analog_ctx.grad that marks its stash and that tensor's version (see _stash_is_current)
        self._stash_marks: list[tuple[Tensor, int] | None] = [None] * len(self._tiles)

    @property
    def bias(self) -> Tensor | None:
        """The digital bias ``[out]`` (aihwkit 1.1 keeps it on ``inner.analog_module``; ``inner.bias`` is only the
        flag ``True``/``False``), or ``None``."""
        b = getattr(self.inner.analog_module, "bias", None)
        return b if isinstance(b, Tensor) else None

    # ------------------------------------------------------------------ forward with analytic counts
    def forward(self, x: Tensor) -> Tensor:
        if torch.is_grad_enabled():
            self._note_frozen()
        y = super().forward(x)
        if torch.is_grad_enabled():    # a forward that can be trained, in either module mode (as the Network counts)
            self._count_forward(x, y)
            if y.requires_grad:
                y.register_hook(self._before_stash)
        return y

    # ------------------------------------------------------------------ the stash and zero_grad
    def _stash_is_current(self, k: int) -> bool:
        """Whether tile ``k``'s stash (aihwkit's ``(x, d)`` lists on its ``analog_ctx``) still stands for the
        gradient of that ``analog_ctx``, i.e. no ``zero_grad`` reset it since the stash began.

        torch's contract is that ``zero_grad`` forgets the gradients of earlier backward passes; aihwkit's
        backward stores ``(x, d)`` beside the parameter and gives it no ``.grad``, so torch's ``model.zero_grad()``
        would leave the stash to be applied at the next update. As on the crossbar backend (:mod:`crossbar.modules`)
        the stash is tied to ``analog_ctx.grad``: when it begins (:meth:`_before_stash`), the tile's context gets
        a zero ``.grad`` (aihwkit's context is a one-element parameter; an existing ``.grad`` is kept), remembered
        with its version counter; ``zero_grad`` sets it to ``None`` or zeroes it in place (a new version), and the
        stash is then stale. Without a mark (no backward through :meth:`forward` since the last update) the stash
        counts as current."""
        mark = self._stash_marks[k]
        if mark is None:
            return True
        grad = self._tiles[k][0].analog_ctx.grad
        return grad is mark[0] and grad._version == mark[1]

    def _before_stash(self, grad_out: Tensor) -> None:
        """Tensor hook on a training forward's output: runs in backward before aihwkit's backward of that forward
        stores its ``(x, d)``. Drops a stash that a ``zero_grad`` made stale and marks a stash that begins now
        (:meth:`_stash_is_current`); ``grad_out`` is left as it is.

        A backward pass that does not compute a tile's ``analog_ctx`` gradient (``torch.autograd.grad(loss, x)``,
        ``loss.backward(inputs=[x])``: saliency maps, gradient penalties) leaves an ``nn.Linear``'s
        ``weight.grad`` as it is and, on the crossbar backend, stashes nothing; aihwkit's backward stores ``(x, d)``
        all the same, so what it stores in such a pass is cut off again when the pass ends
        (:meth:`_drop_after_pass`)."""
        for k, (tile, _, _) in enumerate(self._tiles):
            ctx = tile.analog_ctx
            if not self._stash_is_current(k):
                ctx.reset()
                self._stash_marks[k] = None
            if not ctx.requires_grad:
                continue   # frozen: the update skips the tile (_trains), its stash is dropped there
            if not _pass_computes_grad_of(ctx):
                self._drop_after_pass(ctx)
                continue
            if self._stash_marks[k] is None:
                g = ctx.grad
                if g is None:
                    g = torch.zeros_like(ctx)
                    ctx.grad = g
                self._stash_marks[k] = (g, g._version)

    @staticmethod
    def _drop_after_pass(ctx: Any) -> None:
        """At the end of the running backward pass, cut ``ctx``'s stash back to what it holds now. The pass's first
        hook comes before any of that pass's stores, so its cut is the one that counts (a layer called several
        times queues one cut per call; the later ones keep more and change nothing)."""
        keep = len(ctx.analog_input)

        def cut() -> None:
            del ctx.analog_input[keep:], ctx.analog_grad_output[keep:]

        torch.autograd.Variable._execution_engine.queue_callback(cut)

    @torch.no_grad()
    def _count_forward(self, x: Tensor, y: Tensor) -> None:
        """Add the analytic counts of one training (grad-enabled) forward of ``n_vec`` vectors (and of its backward
        through the array): ``n_vec`` times the per-vector counts of :meth:`_per_vector_counts`, one add each."""
        n_vec = y.numel() // self.out_features
        self.count_buffer.add_(self._forward_counts, alpha=n_vec)
        if self.backward_mode == "array" and x.requires_grad:
            self.count_buffer.add_(self._backward_counts, alpha=n_vec)

    def _per_vector_counts(self) -> tuple[Tensor, Tensor]:
        """The counts of one input vector's forward and of one error vector's backward, ``[len(COST_KINDS)]``
        float64 each (integers), from the tile grid."""
        n_out, n_in, tiles = self.out_features, self.in_features, len(self._tiles)
        forward = torch.zeros(len(COST_KINDS), dtype=torch.float64)
        backward = torch.zeros(len(COST_KINDS), dtype=torch.float64)
        for unit, mvms, passes, adc, dac in ((forward, "forward_mvms", "forward_passes",
                                              n_out * self._n_in_blocks, n_in * self._n_out_blocks),
                                             (backward, "backward_mvms", "backward_passes",
                                              n_in * self._n_out_blocks, n_out * self._n_in_blocks)):
            unit[_K[mvms]] = 1
            unit[_K[passes]] = tiles
            unit[_K["adc_conversions"]] = adc
            unit[_K["dac_conversions"]] = dac
            unit[_K["array_macs"]] = n_out * n_in
        return forward, backward

    # ------------------------------------------------------------------ weights and importance
    def get_weights(self) -> Tensor:
        w, _ = self.inner.get_weights()
        return w.detach().reshape(self.weight_shape).clone()

    def set_weights(self, weight: Tensor, write_noise: bool = True, clip: bool = True) -> None:
        """aihwkit's ``set_weights``, which on a device with write noise always draws it and always clips into
        the device bounds (``write_noise`` and ``clip`` have no effect here: aihwkit 1.1 offers no unclipped
        write to a pulsed device). ``ValueError`` for a wrong shape, or a NaN / ±Inf entry
        (:func:`crossbar.check_finite_weights`; the tiles are left as they were)."""
        if tuple(weight.shape) != self.weight_shape:
            raise ValueError(f"AihwkitLayer.set_weights: expected shape {self.weight_shape}, got "
                             f"{tuple(weight.shape)}")
        crossbar.check_finite_weights("AihwkitLayer.set_weights", weight.detach())
        _, bias = self.inner.get_weights()
        self.inner.set_weights(weight.detach().cpu().reshape(self.weight_shape), bias)

    def _check_source(self, source: str) -> None:
        if source != "exact":
            raise ValueError(
                "AihwkitLayer: only the 'exact' importance is implemented for aihwkit (an all-ones read of an "
                "aihwkit tile gives the signed row sum Σw of one signed array, not the differential-pair sum "
                f"Σ(G⁺+G⁻)); got {source!r}. Use importance='exact', or backend 'crossbar' for 'array'")

    def row_importance(self, source: str, g_offset: float = 0.0) -> Tensor:
        self._check_source(source)
        return self.get_weights().abs().flatten(1).sum(dim=1)

    def col_importance(self, source: str, g_offset: float = 0.0) -> Tensor:
        self._check_source(source)
        return self.get_weights().abs().flatten(1).sum(dim=0)

    # ------------------------------------------------------------------ update
    def _note_frozen(self) -> None:
        """Remember which tiles are frozen at this forward (the flag that counts for the stash it leads to)."""
        seen = self._frozen_seen
        for k, (tile, _, _) in enumerate(self._tiles):
            if not tile.analog_ctx.requires_grad:
                seen[k] = True

    def _trains(self, k: int) -> bool:
        """Whether tile ``k`` holds a stash for the update: aihwkit stored ``(x, d)``, the tile was not frozen
        at a forward since the last update (see the module docstring) and no ``zero_grad`` dropped the stash
        (:meth:`_stash_is_current`)."""
        return (not self._frozen_seen[k] and self._tiles[k][0].analog_ctx.has_gradient()
                and self._stash_is_current(k))

    def has_pending(self) -> bool:
        return any(self._trains(k) for k in range(len(self._tiles)))

    def _tile_xd(self, tile: Any, rows: slice, cols: slice) -> tuple[Tensor, Tensor]:
        """The pending ``(x ⊙ input_scale, d ⊙ error_scale)`` of one tile, ``[N, cols]`` and ``[N, rows]``."""
        es, xs = self.error_scale, self.input_scale
        if es is not None and es.numel() != self.out_features:
            raise ValueError(f"AihwkitLayer.error_scale must have {self.out_features} elements, got "
                             f"shape {tuple(es.shape)}")
        if xs is not None and xs.numel() != self.in_features:
            raise ValueError(f"AihwkitLayer.input_scale must have {self.in_features} elements, got "
                             f"shape {tuple(xs.shape)}")
        ctx = tile.analog_ctx
        n_in, n_out = cols.stop - cols.start, rows.stop - rows.start
        x = torch.cat([t.reshape(-1, n_in) for t in ctx.analog_input])
        d = torch.cat([t.reshape(-1, n_out) for t in ctx.analog_grad_output])
        if es is not None:
            d = d * es.reshape(-1)[rows].to(d.dtype)
        if xs is not None:
            x = x * xs.reshape(-1)[cols].to(x.dtype)
        return x, d

    @torch.no_grad()
    def pending_update(self, lr: float) -> Tensor | None:
        if not self.has_pending():
            return None
        out = torch.zeros(self.out_features, self.in_features)
        for k, (tile, rows, cols) in enumerate(self._tiles):
            if self._trains(k):
                x, d = self._tile_xd(tile, rows, cols)
                out[rows, cols] = -lr * (d.transpose(0, 1) @ x)
        return out.reshape(self.weight_shape)

    @torch.no_grad()
    def apply_update(self, lr: float, probe: bool = False) -> tuple[Tensor, Tensor] | None:
        num = torch.zeros((), dtype=torch.float64)
        den = torch.zeros((), dtype=torch.float64)
        any_update = False
        for k, (tile, rows, cols) in enumerate(self._tiles):
            ctx = tile.analog_ctx
            if not self._trains(k):
                ctx.reset()   # a frozen tile's stash (aihwkit keeps one) is dropped: no pulses
                continue
            x, d = self._tile_xd(tile, rows, cols)
            if x.shape[0] == 0:   # an empty batch: nothing to update (the crossbar backend stashes none either)
                ctx.reset()
                continue
            self.count_buffer[_K["pulses"]] += self._expected_pulses(x, d, lr)
            self.count_buffer[_K["updates"]] += 1
            before = _device_states(tile) if probe else None
            tile.set_learning_rate(lr)
            tile.update(x, d)
            ctx.reset()
            tile.post_update_step()
            any_update = True
            if before is not None:
                n, dd = self._probe_result(before, _device_states(tile),
                                           x.to(torch.float64), d.to(torch.float64), lr)
                num, den = num + n, den + dd
        self._frozen_seen = [False] * len(self._tiles)
        self._stash_marks = [None] * len(self._tiles)
        if not (probe and any_update):
            return None
        return num, den

    def _expected_pulses(self, x: Tensor, d: Tensor, lr: float) -> Tensor:
        p_x, p_d, bl = crossbar.pulse_probabilities(x[:, None, :], d[:, None, :], lr,
                                                    self.config.device.granularity, self.config.update)
        return (bl.to(p_x.dtype) * p_x.sum(-1) * p_d.sum(-1)).sum().to(torch.float64)

    def clear(self) -> None:
        for tile, _, _ in self._tiles:
            tile.analog_ctx.reset()
        self._frozen_seen = [False] * len(self._tiles)
        self._stash_marks = [None] * len(self._tiles)

    def counts(self) -> Tensor:
        out = self.count_buffer.clone()
        out[_K["digital_macs"]] += self.digital_mac_count
        return out

    def analog_parameters(self) -> list[Tensor]:
        return [tile.analog_ctx for tile, _, _ in self._tiles]


def make_aihwkit_layer(layer: nn.Module, config: crossbar.CrossbarConfig, seed: int,
                       backward_mode: str = "array", feedback: Tensor | None = None) -> AihwkitLayer:
    """An :class:`AihwkitLayer` with the weights (clipped into the device bounds) and bias of the digital
    ``layer`` (``nn.Linear``, ``nn.Conv2d`` or ``FALinear``)."""
    from aihwkit.nn import AnalogConv2d, AnalogLinear

    rpu = aihwkit_rpu_config(config, seed)
    bias = getattr(layer, "bias", None)
    if isinstance(layer, nn.Conv2d):
        if layer.groups != 1 or layer.padding_mode != "zeros" or isinstance(layer.padding, str):
            raise ValueError("make_aihwkit_layer: only groups=1, zero padding given as numbers is supported")
        inner: Any = AnalogConv2d(layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride,
                                  padding=layer.padding, dilation=layer.dilation, bias=bias is not None,
                                  rpu_config=rpu)
    else:
        inner = AnalogLinear(layer.in_features, layer.out_features, bias=bias is not None, rpu_config=rpu)
    _seed_tile_array(inner, config, seed)
    w = cast(Tensor, layer.weight).detach().cpu()
    crossbar.check_finite_weights(f"make_aihwkit_layer({type(layer).__name__})", w)
    inner.set_weights(w, None if bias is None else bias.detach().cpu())
    return AihwkitLayer(inner, config, backward_mode, feedback)
