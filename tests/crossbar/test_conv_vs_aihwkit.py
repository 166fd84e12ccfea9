"""``AnalogConv2d`` against ``F.conv2d`` + autograd and against aihwkit's ``AnalogConv2d`` (CPU, same config).

Both layers unfold the image into patches (one MVM input vector per output position), run them through one array
of tiles and update the kernel matrix ``[out, C_in*kh*kw]`` with the patches as the update's input vectors.

* Exact: perfect periphery, ideal device, float update (``pulse_type="none"``): forward, input gradient and the
  weight (and digital bias) after one SGD step equal torch's, and aihwkit's, for strides, per-axis paddings,
  dilations, 1/3/5 kernels, non-square images, 1 and several channels, bias on/off, a batch of one and kernel
  matrices cut over several tiles (fewer tile rows than output channels, fewer tile columns than ``C·k·k``).
* Noisy periphery: the distribution (mean, variance) of every forward output and of every input-gradient element
  over many repetitions equals aihwkit's (z-scores of the mean difference, pooled variance ratio).
* Pulsed update: the expected number of device pulses of one update is the hand formula
  ``lr/dw_min · Σ_patches ‖x‖₁‖d‖₁`` (no probability capped), and the mean weight change is ``-lr·∇W`` and
  aihwkit's.
* Hardware counters of one forward / backward / update, counted by hand from patches and tiles.

aihwkit's C++ generator cannot be seeded from Python: those comparisons are statistical (bounds about 4.5
standard errors wide), each retried once on a fresh aihwkit draw as in ``test_update_vs_aihwkit.py``.
aihwkit's CPU noise comes from a fixed list of Gaussians per tile (test_fixed_list_noise_of_aihwkit_cpu_tiles), so
the noisy-periphery and pulsed-update comparisons spread aihwkit's repetitions over several fresh layers
(``AIHWKIT_LAYERS``).
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from crossbar import (AnalogConv2d, AnalogLinear, AnalogSGD, CrossbarConfig, IOParameters, UpdateParameters,
                      to_aihwkit_rpu_config)
from devices import ConstantStepDevice, IdealDevice

from .retry import retry_once

pytest.importorskip("aihwkit")

from aihwkit import nn as aihwkit_nn  # noqa: E402  (needs aihwkit)
from aihwkit import optim as aihwkit_optim  # noqa: E402


# spread-free device with wide bounds: set_weights clips nothing, every pulse is exactly ±dw_min in expectation
DEVICE = ConstantStepDevice(w_min=-1.0, w_max=1.0, w_min_dtod=0.0, w_max_dtod=0.0, dw_min_dtod=0.0,
                            up_down=0.0, up_down_dtod=0.0)


def _geometry(kw: dict) -> dict:
    """The ``F.conv2d`` keyword arguments of a layer's ``kw`` (everything but ``kernel_size`` / ``bias``)."""
    return {k: v for k, v in kw.items() if k not in ("kernel_size", "bias")}


def _aihwkit_conv(c_in: int, c_out: int, cfg: CrossbarConfig, kw: dict, weight: torch.Tensor,
                  bias: torch.Tensor | None):
    """aihwkit's ``AnalogConv2d`` from the converted config, programmed with ``weight`` (and ``bias``; a copy: on a
    grid of tiles aihwkit 1.1's ``set_weights`` keeps the given bias tensor's storage as its bias parameter, so its
    optimizer step would change the caller's tensor)."""
    kw = dict(kw, bias=bias is not None)
    layer = aihwkit_nn.AnalogConv2d(c_in, c_out, rpu_config=to_aihwkit_rpu_config(cfg), **kw)
    layer.set_weights(weight, None if bias is None else bias.clone())
    w_read, b_read = layer.get_weights()
    assert torch.equal(w_read.reshape(weight.shape), weight)
    if bias is not None:
        assert torch.equal(b_read, bias)
    return layer


def _aihwkit_sgd(layer, lr: float):
    opt = aihwkit_optim.AnalogSGD(layer.parameters(), lr=lr)
    opt.regroup_param_groups(layer)
    return opt


# ---------------------------------------------------------------------------------------------- exact (ideal)

GEOMETRIES = [
    # c_in, c_out, layer kwargs, (H, W), batch, (tile_rows, tile_cols)
    (1, 1, dict(kernel_size=1), (5, 3), 1, (256, 256)),
    (1, 4, dict(kernel_size=3), (6, 9), 2, (256, 256)),
    (3, 1, dict(kernel_size=3, padding=1, bias=False), (7, 5), 1, (256, 256)),
    (3, 4, dict(kernel_size=3, stride=2, padding=(1, 2), dilation=(2, 1)), (9, 8), 3, (256, 256)),
    (2, 5, dict(kernel_size=(3, 5), stride=(1, 2), padding=(0, 2)), (6, 11), 2, (256, 256)),
    (4, 7, dict(kernel_size=5, padding=2), (6, 11), 3, (3, 17)),                 # 3 x 6 tiles, padded rows
    (5, 6, dict(kernel_size=3, stride=3, padding=2, dilation=2, bias=False), (11, 10), 1, (2, 9)),   # 3 x 5 tiles
    (6, 9, dict(kernel_size=1, stride=2, padding=1), (5, 8), 2, (4, 4)),         # 1x1 kernel: 3 x 2 tiles
]


@pytest.mark.parametrize("c_in, c_out, kw, size, batch, tile", GEOMETRIES)
def test_ideal_conv_equals_torch_and_aihwkit(c_in, c_out, kw, size, batch, tile) -> None:
    """Forward, input gradient, and weight / bias after one SGD step: ours == ``F.conv2d`` + autograd == aihwkit
    (float32, so up to rounding: the three sum the patch products in different orders)."""
    cfg = CrossbarConfig.perfect(device=IdealDevice(), update=UpdateParameters(pulse_type="none"),
                                 tile_rows=tile[0], tile_cols=tile[1])
    ours = AnalogConv2d(c_in, c_out, rpu_config=cfg, seed=0, **kw)
    w = ours.get_weights()
    b = None if ours.bias is None else ours.bias.detach().clone()
    theirs = _aihwkit_conv(c_in, c_out, cfg, kw, w, b)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, c_in, *size, generator=g)
    geometry = _geometry(kw)

    # torch reference: conv2d with autograd on the same weights
    x_t, w_t = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
    b_t = None if b is None else b.clone().requires_grad_(True)
    y_t = F.conv2d(x_t, w_t, b_t, **geometry)
    grad = torch.randn(y_t.shape, generator=g)
    y_t.backward(grad)
    lr = 0.1
    tol = dict(rtol=1e-5, atol=1e-5)

    x_o, x_a = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    y_o, y_a = ours(x_o), theirs(x_a)
    assert y_o.shape == y_a.shape == y_t.shape
    torch.testing.assert_close(y_o, y_t.detach(), **tol)
    torch.testing.assert_close(y_a, y_t.detach(), **tol)
    y_o.backward(grad)
    y_a.backward(grad)
    torch.testing.assert_close(x_o.grad, x_t.grad, **tol)
    torch.testing.assert_close(x_a.grad, x_t.grad, **tol)
    AnalogSGD(ours.parameters(), lr=lr).step()
    _aihwkit_sgd(theirs, lr).step()
    w_expected = w - lr * w_t.grad
    w_a, b_a = theirs.get_weights()
    torch.testing.assert_close(ours.get_weights(), w_expected, **tol)
    torch.testing.assert_close(w_a.reshape(w.shape), w_expected, **tol)
    if b is not None:
        torch.testing.assert_close(ours.bias.detach(), b - lr * b_t.grad, **tol)
        torch.testing.assert_close(b_a, b - lr * b_t.grad, **tol)


@pytest.mark.parametrize("kwargs, message", [
    (dict(groups=4), r"^AnalogConv2d.groups must be 1 \(grouped convolutions are not supported\), got 4$"),
    (dict(padding_mode="reflect"), r"^AnalogConv2d.padding_mode must be 'zeros', got 'reflect'$"),
    (dict(padding_mode="circular"), r"^AnalogConv2d.padding_mode must be 'zeros', got 'circular'$"),
    (dict(padding=(1, 2, 1, 2)), r"^AnalogConv2d.padding must be an int or a pair of ints .*got \(1, 2, 1, 2\)$"),
])
def test_refused_conv_options_name_the_argument(kwargs, message) -> None:
    """What ``nn.Conv2d`` takes but the analog layer does not (aihwkit 1.1 refuses groups and padding modes as
    well): a ``ValueError`` naming the argument. Left/right asymmetric padding (a 4-tuple) is not an ``nn.Conv2d``
    argument either (it pads both sides of an axis equally). String paddings are taken (test_module_edge_cases.py)."""
    if "(1, 2, 1, 2)" not in message:
        torch.nn.Conv2d(4, 4, 3, **kwargs)                                # a valid nn.Conv2d argument
    with pytest.raises(ValueError, match=message):
        AnalogConv2d(4, 4, 3, seed=0, **kwargs)


def test_aihwkit_zeroes_the_error_of_large_outputs_ours_passes_it() -> None:
    """An intended difference (see the ``crossbar.modules`` docstring): aihwkit 1.1's layers (``AnalogTile``:
    ``handle_output_bound``) zero, in the backward MVM's input, the error of every output whose forward value reached
    ``0.999 · out_scale · out_bound`` in the layer's units (after noise management's rescaling), even with a perfect
    periphery where nothing saturates; the update uses the unmasked error. Ours passes every error (the gradient of
    the computed convolution). Perfect periphery (out_bound 12 in the converted config), outputs up to ~30:
    aihwkit's input gradient is autograd's with the error of the outputs >= 11.988 zeroed; ours is autograd's; both
    weight changes are ``-lr·∇W`` with the full error."""
    cfg = CrossbarConfig.perfect(device=IdealDevice(), update=UpdateParameters(pulse_type="none"))
    kw = dict(kernel_size=3, padding=1)
    ours = AnalogConv2d(2, 3, bias=False, rpu_config=cfg, seed=0, **kw)
    w = ours.get_weights().abs() + 0.2                                # positive: large outputs inside the image
    ours.set_weights(w, write_noise=False)
    theirs = _aihwkit_conv(2, 3, cfg, kw, w, None)
    g = torch.Generator().manual_seed(2)
    x = torch.rand(2, 2, 5, 6, generator=g) * 4.0
    y_ref = F.conv2d(x, w, padding=1)
    bound = 0.999 * cfg.forward.out_scale * IOParameters().out_bound
    large = y_ref.abs() >= bound
    assert 0.2 < float(large.double().mean()) < 0.8                 # some outputs beyond, some below
    grad = torch.randn(y_ref.shape, generator=g)

    def autograd(error: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x_t, w_t = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
        F.conv2d(x_t, w_t, padding=1).backward(error)
        return x_t.grad, w_t.grad

    x_grad_full, w_grad_full = autograd(grad)
    x_grad_masked, _ = autograd(torch.where(large, 0.0, grad))
    lr = 0.01
    grads = []
    for layer in (ours, theirs):
        x_in = x.clone().requires_grad_(True)
        layer(x_in).backward(grad)
        grads.append(x_in.grad)
    torch.testing.assert_close(grads[0], x_grad_full, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grads[1], x_grad_masked, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(x_grad_full, x_grad_masked, rtol=1e-2, atol=1e-2)
    AnalogSGD(ours.parameters(), lr=lr).step()
    _aihwkit_sgd(theirs, lr).step()
    torch.testing.assert_close(ours.get_weights(), w - lr * w_grad_full, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(theirs.get_weights()[0].reshape(w.shape), w - lr * w_grad_full, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------- noisy periphery

NOISY = {
    "default": IOParameters(),
    "saturating_bound_management": IOParameters(out_bound=1.0),
    "stochastic_extras": IOParameters(inp_noise=0.02, inp_sto_round=True, out_sto_round=True, w_noise=0.01,
                                      w_noise_type="additive_constant"),
}
NOISY_GEOMETRIES = [
    # c_in, c_out, kw, (H, W), (tile_rows, tile_cols): a 1x1 kernel with padding has all-zero patches (exact zero
    # outputs in both); 3 x 3 on 3-column tiles: the border patches give some tiles an all-zero input slice
    (3, 4, dict(kernel_size=3, padding=1), (6, 7), (256, 256)),
    (3, 6, dict(kernel_size=3, padding=2, stride=2), (6, 7), (3, 9)),
    (2, 3, dict(kernel_size=1, padding=1), (4, 5), (256, 256)),
    (2, 3, dict(kernel_size=3, padding=1), (4, 5), (3, 3)),
]
REPS = 2000
AIHWKIT_LAYERS = 20
"""aihwkit's repetitions are spread over this many freshly made layers (``REPS / AIHWKIT_LAYERS`` each).

aihwkit's CPU RNG draws its Gaussians from a fixed list of 32,768 numbers made with the tile's RNG
(``src/rpucuda/rng.h``, ``FIXED_LIST_SIZE``; see test_fixed_list_noise_of_aihwkit_cpu_tiles): every noise draw of
one layer shares the list's sample mean ``ε`` (std ``1/√32768``), so the repetitions of one layer are not
independent and its mean carries an offset that does not shrink with their number. An input-gradient element
sums the backward outputs of up to ``k·k = 9`` patches of the same tile: the offsets add up (``9ε``) while the
noise adds in quadrature (``3σ``), a common shift of every element of ``≈ 3ε√REPS`` standard errors, i.e. mean z²
larger by ``≈ 9·REPS/32768 ≈ 0.55`` in expectation (chi-square distributed, one draw per layer: it failed the
1.6 bound in about one run in three, with 2.2 for 40,000 repetitions of one layer and growing with them). Over
``AIHWKIT_LAYERS`` independent lists the offset averages out: ``9·REPS/(32768·20) ≈ 0.03``."""


_OUR_SEEDS = itertools.count()
"""Our layer's seed, a new one at every call: with one fixed seed our sample's own deviations from the true means
were the same in every run and in the retry (:func:`~tests.crossbar.retry.retry_once`), so a seed whose sample sits
high failed far more often than the bound's calibration says (the ``stochastic_extras`` 1×1 case: its first draw
failed the 1.6 bound in three whole-suite runs in a row, once the retry too), and a retry was no new draw. Both
samples are now fresh draws, as the calibration assumes."""


def _noisy_pair(io: IOParameters, c_in: int, c_out: int, kw: dict, tile: tuple[int, int]):
    """Our seeded layer (:data:`_OUR_SEEDS`) and :data:`AIHWKIT_LAYERS` aihwkit layers (each with its own noise
    list), same weights."""
    cfg = CrossbarConfig(device=DEVICE, forward=io, backward=io, tile_rows=tile[0], tile_cols=tile[1])
    ours = AnalogConv2d(c_in, c_out, bias=False, rpu_config=cfg, seed=next(_OUR_SEEDS), **kw)
    w = torch.rand(ours.get_weights().shape, generator=torch.Generator().manual_seed(3)) * 1.2 - 0.6
    ours.set_weights(w, write_noise=False)
    assert torch.equal(ours.get_weights(), w)
    return ours, [_aihwkit_conv(c_in, c_out, cfg, kw, w, None) for _ in range(AIHWKIT_LAYERS)]


def _assert_same_distribution(ours: torch.Tensor, theirs: torch.Tensor, var_tol: float = 0.05) -> None:
    """``[reps, ...]`` samples of every element: equal means (z-scores) and equal pooled variances (within
    ``var_tol``). Elements without spread in both (outputs of all-zero patches) must agree exactly. Calibrated on 72
    null draws of the forward comparison (largest: max |z| 3.7, mean z² 1.29, variance ratio off by 1.9 %); a 3 %
    gain error, 5 % more noise (std) or an offset of 0.01 fail every geometry."""
    n = ours.shape[0]
    m_o, m_a, v_o, v_a = ours.mean(0), theirs.mean(0), ours.var(0), theirs.var(0)
    se = (v_o / n + v_a / n).sqrt()
    fixed = se == 0
    assert torch.equal(m_o[fixed], m_a[fixed])
    z = (m_o - m_a)[~fixed] / se[~fixed]
    assert z.abs().max() < 4.5, z.abs().max()
    assert z.square().mean() < 1.6, z.square().mean()
    assert abs(v_o.mean() / v_a.mean() - 1) < var_tol, (v_o.mean(), v_a.mean())


def test_fixed_list_noise_of_aihwkit_cpu_tiles() -> None:
    """Why :data:`AIHWKIT_LAYERS`: the output noise of an aihwkit CPU tile takes at most 32,768 values (its RNG's
    fixed list of Gaussians), ours is drawn afresh. Zero weights, unquantized unbounded converters, an all-ones error
    (``alpha = 1``): every backward output is ``out_noise·ξ`` exactly. 108,000 draws: the list's values, each drawn
    ``~3.3`` times (``32768·(1 - e^-3.3) ≈ 31,600`` distinct); float32 Gaussians drawn afresh repeat a value only
    rarely (two draws coincide with probability ``~1e-7``: ~600 repeats at most). The std is ``out_noise`` in both
    (within 2 %, the list's own sample std is within 0.6 % of 1)."""
    io = IOParameters(inp_res=0.0, out_res=0.0, out_bound=math.inf, out_noise=0.06)
    cfg = CrossbarConfig(device=DEVICE, forward=IOParameters(is_perfect=True), backward=io)
    n_in, n_out, batch = 27, 4, 4000
    ours = AnalogLinear(n_in, n_out, bias=False, rpu_config=cfg, seed=0)
    ours.set_weights(torch.zeros(n_out, n_in), write_noise=False)
    theirs = aihwkit_nn.AnalogLinear(n_in, n_out, bias=False, rpu_config=to_aihwkit_rpu_config(cfg))
    theirs.set_weights(torch.zeros(n_out, n_in), None)
    draws = []
    for layer in (ours, theirs):
        x = torch.zeros(batch, n_in, requires_grad=True)
        layer(x).backward(torch.ones(batch, n_out))
        draws.append(x.grad.flatten())
    for noise in draws:
        assert noise.numel() == batch * n_in
        assert abs(float(noise.std()) / io.out_noise - 1) < 0.02, float(noise.std())
    assert draws[0].unique().numel() > 0.99 * batch * n_in
    assert 30_000 < draws[1].unique().numel() <= 32_768


@pytest.mark.parametrize("setting", list(NOISY))
@pytest.mark.parametrize("c_in, c_out, kw, size, tile", NOISY_GEOMETRIES)
@retry_once
def test_noisy_forward_and_input_gradient_distribution_equal_aihwkit(setting, c_in, c_out, kw, size, tile) -> None:
    """One image repeated ``REPS`` times (independent noise per patch): every output element's mean and variance,
    and every input-gradient element's, equal aihwkit's (its repetitions spread over :data:`AIHWKIT_LAYERS`
    layers)."""
    io = NOISY[setting]
    ours, theirs = _noisy_pair(io, c_in, c_out, kw, tile)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(1, c_in, *size, generator=g).expand(REPS, -1, -1, -1).contiguous()
    with torch.no_grad():
        _assert_same_distribution(ours(x), torch.cat([t(part) for t, part in zip(theirs, x.chunk(AIHWKIT_LAYERS))]))
    # input gradient: the backward MVM of one fixed output gradient per repetition. The forward input is scaled so
    # that no output comes near the forward out_bound, where aihwkit's layer zeroes the error (see
    # test_aihwkit_zeroes_the_error_of_large_outputs_ours_passes_it); the backward MVM does not depend on it.
    w = ours.get_weights()
    ideal = F.conv2d(x[:1], w, **_geometry(kw))
    x = x * min(1.0, 0.5 * io.out_bound / float(ideal.abs().max()))
    h_out, w_out = ours.output_size(*size)
    grad = torch.randn(1, c_out, h_out, w_out, generator=g).expand(REPS, -1, -1, -1).contiguous()

    def input_gradient(layer, x_part: torch.Tensor, grad_part: torch.Tensor) -> torch.Tensor:
        x_in = x_part.clone().requires_grad_(True)
        y = layer(x_in)
        assert float(y.detach().abs().max()) < 0.999 * io.out_bound          # every sample and patch
        y.backward(grad_part)
        return x_in.grad

    grad_ours = input_gradient(ours, x, grad)
    ours.clear_stash()
    grad_theirs = torch.cat([input_gradient(t, x_part, grad_part) for t, x_part, grad_part
                             in zip(theirs, x.chunk(AIHWKIT_LAYERS), grad.chunk(AIHWKIT_LAYERS))])
    _assert_same_distribution(grad_ours, grad_theirs)


# ---------------------------------------------------------------------------------------------- pulsed update

UPDATE_REPS = 400


def _update_case():
    """A strided, padded 2 -> 3 conv on a 2 x 2 grid of tiles, its input, output gradient and reference weights."""
    kw = dict(kernel_size=3, padding=1, stride=2)
    g = torch.Generator().manual_seed(3)
    w0 = torch.rand(3, 2, 3, 3, generator=g) * 0.6 - 0.3
    x = torch.randn(2, 2, 5, 6, generator=g)
    grad = torch.randn(F.conv2d(x, w0, **_geometry(kw)).shape, generator=g)
    cfg = CrossbarConfig.perfect(device=DEVICE, tile_rows=2, tile_cols=9)
    return kw, cfg, w0, x, grad


@retry_once
def test_pulsed_conv_update_in_expectation_pulses_torch_and_aihwkit() -> None:
    """``lr`` such that no sample exceeds the pulse budget (``lr·max|x|·max|d|/dw_min <= desired_bl``: no firing
    probability is capped). Expected device pulses of one update, counted by hand: every patch ``b`` (an update
    sample) fires on device ``(i, j)`` in expectation ``BL·p_j·q_i = lr|x_bj||d_bi|/dw_min`` coincidences, so the
    update fires ``lr/dw_min · Σ_b ‖x_b‖₁ ‖d_b‖₁`` pulses (the tile split only partitions the sums). The mean
    weight change is ``-lr·∇W`` (torch autograd), and its distribution per device is aihwkit's.

    aihwkit's repetitions are spread over :data:`AIHWKIT_LAYERS` fresh layers (20 each). Its pulse trains are
    Bernoulli draws from C ``rand()`` (no list), but each pulse's cycle-to-cycle noise (``dw_min_std = 0.3``) is a
    Gaussian of the tile's fixed list: one layer's mean weight changes are all scaled by ``1 + 0.3·ε`` (``ε`` its
    list's mean, std ``1/√32768``), a shift of a tile's devices common to all repetitions, ``≈ 0.14`` standard errors
    (rms) at 400 of them (mean z² larger by ``≈ 0.02`` in expectation). Measured, 150 draws each: aihwkit against
    ``-lr·∇W`` failed the mean z² bound 3 times from one layer (mean z² 1.02 ± 0.20), never from 20 layers
    (1.01 ± 0.19); the comparison with our seeded draw failed neither way."""
    kw, cfg, w0, x, grad = _update_case()
    lr = 0.005
    patches = F.unfold(x, 3, padding=1, stride=2).transpose(1, 2).reshape(-1, 18)      # [B·L, C·k·k]
    d = grad.reshape(2, 3, -1).transpose(1, 2).reshape(-1, 3)                           # [B·L, out]
    dw_min = DEVICE.dw_min
    budget = lr * patches.abs().amax(1) * d.abs().amax(1) / dw_min
    assert 20 < float(budget.max()) <= cfg.update.desired_bl          # near, but within, the budget
    expected_pulses = float((lr / dw_min * patches.abs().sum(1) * d.abs().sum(1)).sum())
    w_t = w0.clone().requires_grad_(True)
    F.conv2d(x, w_t, **_geometry(kw)).backward(grad)
    expected_dw = -lr * w_t.grad

    ours = AnalogConv2d(2, 3, bias=False, rpu_config=cfg, seed=11, **kw)
    assert (ours.tile.grid.n_row_tiles, ours.tile.grid.n_col_tiles) == (2, 2)
    dws, pulses = torch.empty(UPDATE_REPS, *w0.shape), torch.empty(UPDATE_REPS, dtype=torch.float64)
    opt = AnalogSGD(ours.parameters(), lr=lr)
    for r in range(UPDATE_REPS):
        ours.set_weights(w0, write_noise=False)
        before = int(ours.tile.counters["pulses"])
        ours(x).backward(grad)
        opt.step()
        pulses[r] = int(ours.tile.counters["pulses"]) - before
        dws[r] = ours.get_weights() - w0
    dws_a = torch.empty_like(dws)
    for reps in torch.arange(UPDATE_REPS).chunk(AIHWKIT_LAYERS):       # a fresh layer (noise list) per chunk
        theirs = _aihwkit_conv(2, 3, cfg, kw, w0, None)
        opt_a = _aihwkit_sgd(theirs, lr)
        for r in reps.tolist():
            theirs.set_weights(w0)
            theirs(x).backward(grad)
            opt_a.step()
            opt_a.zero_grad()
            dws_a[r] = theirs.get_weights()[0].reshape(w0.shape) - w0

    se_pulses = pulses.std() / UPDATE_REPS ** 0.5
    assert abs(pulses.mean() - expected_pulses) < 4.5 * se_pulses, (pulses.mean(), expected_pulses, se_pulses)
    assert se_pulses < 0.002 * expected_pulses                       # the bound is tight: ~2,700 ± 2.5
    for sample in (dws, dws_a):
        z = (sample.mean(0) - expected_dw) / (sample.std(0) / UPDATE_REPS ** 0.5)
        assert z.abs().max() < 4.5 and z.square().mean() < 1.6, (z.abs().max(), z.square().mean())
    _assert_same_distribution(dws, dws_a, var_tol=0.1)             # 400 repetitions: pooled ratio off by <= 3 %


# ---------------------------------------------------------------------------------------------- counters


def test_conv_counters_are_the_hand_counted_patches_tiles_and_lines() -> None:
    """2 images of 5 x 6, 3 x 3 kernel, stride 2, padding 1: ``L = 3·3`` positions, ``B·L = 18`` patches of
    ``C·k·k = 27`` values; 5 output channels on 2 x 7 tiles: ``R = 3`` row blocks (2, 2, 1 logical rows), ``C = 4``
    column blocks (7, 7, 7, 6), ``T = 12``. Forward: 18 MVMs, ``T·18`` passes (no bound-management repeat with a
    perfect periphery), each column block's pass converts its block's logical outputs: ``18·C·out`` ADC and
    ``18·R·in`` DAC conversions. Backward: the same passes with the roles of the lines swapped. One update call;
    no MVM there. An all-zero patch (the padded border of a 1 x 1 kernel) is still one MVM and its passes."""
    cfg = CrossbarConfig.perfect(tile_rows=2, tile_cols=7)
    layer = AnalogConv2d(3, 5, 3, stride=2, padding=1, rpu_config=cfg, seed=0)
    x = torch.randn(2, 3, 5, 6, requires_grad=True)
    y = layer(x)
    assert y.shape == (2, 5, 3, 3)
    n, rows, cols, inp, out = 18, 3, 4, 27, 5
    fwd = {"forward_mvms": n, "backward_mvms": 0, "forward_passes": rows * cols * n, "backward_passes": 0,
           "adc_conversions": n * cols * out, "dac_conversions": n * rows * inp, "updates": 0, "pulses": 0,
           "importance_reads": 0}
    assert {k: int(v) for k, v in layer.tile.counters.items()} == fwd
    y.backward(torch.ones_like(y))
    # backward: each pass converts its row block's logical input lines and drives its column block's outputs
    bwd = dict(fwd, backward_mvms=n, backward_passes=rows * cols * n, adc_conversions=n * cols * out + n * rows * inp,
               dac_conversions=n * rows * inp + n * cols * out)
    assert {k: int(v) for k, v in layer.tile.counters.items()} == bwd
    AnalogSGD(layer.parameters(), lr=0.01).step()
    counters = {k: int(v) for k, v in layer.tile.counters.items()}
    assert counters.pop("updates") == 1 and counters.pop("pulses") > 0
    assert counters == {k: v for k, v in bwd.items() if k not in ("updates", "pulses")}

    one = AnalogConv2d(2, 3, 1, padding=1, rpu_config=CrossbarConfig(tile_rows=2, tile_cols=7), seed=0)
    one(torch.randn(2, 2, 3, 4))                                          # 2 · 5 · 6 patches, 36 of them zero
    assert (int(one.tile.counters["forward_mvms"]), int(one.tile.counters["forward_passes"]),
            int(one.tile.counters["adc_conversions"]), int(one.tile.counters["dac_conversions"])) == (60, 120, 180, 240)
