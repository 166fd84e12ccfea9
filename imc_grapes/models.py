"""Models: the reference MLP (any learning rule) and a small CNN, built digitally or from factories.

Every model exposes ``hidden_layers()`` (the layers GRAPES modulates, forward order) and
``output_layer()``, and a ``rule`` attribute, so :func:`imc_grapes.grapes.attach_grapes` needs no guessing.

Initialisation follows the authors' reference code (github.com/IBM/GRAPES, ``w_init='he_uniform'``, its
default): ``W ~ U(-√(6/fan_in), √(6/fan_in))`` for every layer and every activation, no biases. All
draws go through a ``torch.Generator`` seeded with ``seed``; the forward weights are drawn first from it and
the feedback matrices (FA/DFA) from a second generator derived from it, so the same seed gives the same
forward weights under every rule. Layers built by a factory initialise themselves (the factory's job).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from .grapes.feedback import DFAContext, DFAFeedback, FALinear, dfa_output
from .grapes.initializers import _he_uniform_layer_, make_generator
from .suggest import did_you_mean

__all__ = [
    "ACTIVATIONS",
    "MODEL_NAMES",
    "MODEL_RULES",
    "LinearFactory",
    "ConvFactory",
    "Dropout",
    "MLP",
    "SmallCNN",
    "build_model",
    "cnn_max_blocks",
]

ACTIVATIONS: tuple[str, ...] = ("relu", "tanh")
MODEL_NAMES: tuple[str, ...] = ("cnn", "mlp")
MODEL_RULES: tuple[str, ...] = ("bp", "fa", "dfa")

#: ``linear_factory(in_features, out_features, bias) -> nn.Module`` mapping ``[..., in] -> [..., out]``.
LinearFactory = Callable[[int, int, bool], nn.Module]
#: ``conv_factory(in_channels, out_channels, kernel_size, padding, bias) -> nn.Module``
#: mapping ``[batch, in_channels, H, W] -> [batch, out_channels, H, W]`` (stride 1, "same" padding).
ConvFactory = Callable[[int, int, int, int, bool], nn.Module]


def _activation(name: str, owner: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU()
    if name == "tanh":
        return nn.Tanh()
    raise ValueError(f"{owner}.activation must be one of {ACTIVATIONS}, got {name!r}{did_you_mean(name, ACTIVATIONS)}")


def _check_dropout(p: float, owner: str) -> None:
    if not 0.0 <= p < 1.0:
        raise ValueError(f"{owner}.dropout must be in [0, 1) (probability of dropping a unit), got {p}")


def _seeded_streams(seed: int | None) -> tuple[torch.Generator, torch.Generator, int]:
    """Independent streams from one seed: (weights generator, feedback generator, dropout seed)."""
    root = make_generator(seed)
    w_seed, fb_seed, drop_seed = (int(s) for s in torch.randint(0, 2**62, (3,), generator=root))
    return make_generator(w_seed), make_generator(fb_seed), drop_seed


class Dropout(nn.Module):
    """Inverted dropout drawing its masks from an explicit, seeded ``torch.Generator``.

    ``nn.Dropout`` draws from torch's global generator; this one keeps one generator per device
    (created on first use, seeded with ``seed``), so a model's dropout masks are reproducible from its seed.

    Args:
        p: probability of dropping a unit, in [0, 1). seed: seeds the mask stream.

    Shapes: any ``x`` -> same shape; identity in eval mode. Kept units are scaled by ``1/(1-p)``.
    """

    def __init__(self, p: float, seed: int) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout.p must be in [0, 1) (probability of dropping a unit), got {p}")
        self.p = float(p)
        self.seed = int(seed)
        self._generators: dict[str, torch.Generator] = {}

    def generator(self, device: torch.device) -> torch.Generator:
        """The mask generator for ``device`` (created and seeded on first use)."""
        key = str(device)
        if key not in self._generators:
            self._generators[key] = torch.Generator(device=device).manual_seed(self.seed)
        return self._generators[key]

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        u = torch.rand(x.shape, generator=self.generator(x.device), device=x.device, dtype=x.dtype)
        return x * (u >= self.p).to(x.dtype) / (1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}, seed={self.seed}"


class MLP(nn.Module):
    """Fully connected network ``sizes[0] -> ... -> sizes[-1]``: linear, activation, dropout per hidden layer.

    Args:
        sizes: layer widths, input first, classes last (e.g. ``[784, 256, 256, 10]``); at least 2 entries.
        activation: ``"relu"`` or ``"tanh"`` for the hidden layers; the output gives logits (use
            ``F.cross_entropy``, i.e. softmax + cross-entropy as in the reference).
        dropout: probability of dropping a hidden unit (the reference's ``--dropout 0.9`` is a keep
            probability: it corresponds to ``dropout=0.1`` here); inverted dropout as in the reference, masks
            from a seeded generator (:class:`Dropout`).
        bias: add biases (default False, as the reference models).
        rule: ``"bp"`` (backprop), ``"fa"`` (feedback alignment, :class:`FALinear` layers) or ``"dfa"``
            (direct feedback alignment, one :class:`DFAFeedback` per hidden layer in ``self.feedback``).
        seed: seeds every draw (``None``: not reproducible).
        linear_factory: builds every layer instead of ``nn.Linear`` (e.g. an analog crossbar layer);
            supported with ``rule="bp"`` and ``"dfa"`` (FA needs :class:`FALinear`). The factory
            initialises its layers.
        device, dtype: where parameters and buffers live.

    Shapes: ``x: [batch, *]`` (flattened to ``[batch, sizes[0]]``) -> logits ``[batch, sizes[-1]]``.
    """

    def __init__(
        self,
        sizes: Sequence[int],
        activation: str = "relu",
        dropout: float = 0.0,
        bias: bool = False,
        rule: str = "bp",
        seed: int | None = None,
        linear_factory: LinearFactory | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        sizes = tuple(int(s) for s in sizes)
        if len(sizes) < 2 or any(s < 1 for s in sizes):
            raise ValueError(f"MLP.sizes must have >= 2 entries, all >= 1, got {list(sizes)}")
        if rule not in MODEL_RULES:
            raise ValueError(f"MLP.rule must be one of {MODEL_RULES}, got {rule!r}{did_you_mean(rule, MODEL_RULES)}")
        if rule == "fa" and linear_factory is not None:
            raise ValueError("MLP.linear_factory is not supported with rule='fa' (FA needs FALinear layers); "
                             "use rule='bp' or 'dfa'")
        _check_dropout(dropout, "MLP")
        self.sizes = sizes
        self.activation = activation
        self.dropout = float(dropout)
        self.bias = bool(bias)
        self.rule = rule
        self.n_classes = sizes[-1]
        self.act = _activation(activation, "MLP")
        g, g_fb, drop_seed = _seeded_streams(seed)
        self.drop = Dropout(dropout, drop_seed) if dropout > 0 else nn.Identity()
        layers: list[nn.Module] = []
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            if linear_factory is not None:
                layer = linear_factory(n_in, n_out, bias)
            elif rule == "fa":
                layer = FALinear(n_in, n_out, bias, generator=g, feedback_generator=g_fb)
            else:
                layer = nn.Linear(n_in, n_out, bias=bias)
                _he_uniform_layer_(layer.weight, layer.bias, g)
            layers.append(layer)
        self.layers = nn.ModuleList(layers)
        self.feedback = nn.ModuleList(
            [DFAFeedback(n, self.n_classes, generator=g_fb) for n in sizes[1:-1]] if rule == "dfa" else []
        )
        self.to(device=device, dtype=dtype)

    def hidden_layers(self) -> list[nn.Module]:
        """The hidden linear layers (all but the output), forward order."""
        return list(self.layers[:-1])

    def output_layer(self) -> nn.Module:
        """The output (classifier) layer."""
        return self.layers[-1]

    def forward(self, x: Tensor) -> Tensor:
        """x: ``[batch, *]`` with ``prod(*) == sizes[0]`` -> logits ``[batch, n_classes]``."""
        h = x.flatten(1) if x.dim() > 2 else x
        ctx = DFAContext() if self.rule == "dfa" and torch.is_grad_enabled() else None
        for k, layer in enumerate(self.layers[:-1]):
            h = self.drop(self.act(layer(h)))
            if ctx is not None:
                h = self.feedback[k](h, ctx)
        out = self.layers[-1](h)
        if ctx is not None:
            out = dfa_output(out, ctx)
        return out

    def extra_repr(self) -> str:
        return f"sizes={list(self.sizes)}, activation={self.activation!r}, rule={self.rule!r}"


def cnn_max_blocks(h: int, w: int) -> int:
    """The most conv blocks :class:`SmallCNN` takes on ``h × w`` inputs: each block pools 2×2 (``h // 2``), and at
    least one pixel must be left per side (``floor(log2(min(h, w)))``; 0 for a side below 1)."""
    side = min(h, w)
    return side.bit_length() - 1 if side >= 1 else 0


class SmallCNN(nn.Module):
    """``[conv(k×k, same padding) -> activation -> maxpool 2×2] × len(channels) -> flatten -> dropout -> linear``.

    For 28×28 inputs with the default ``channels=(16, 32)``: 28 -> 14 -> 7, classifier ``32·7·7 -> 10``.
    GRAPES modulates the conv layers per output channel (``hidden_layers()``); the classifier is the output.

    Args:
        in_channels, n_classes: input channels and classes.
        channels: output channels of each conv block.
        kernel_size: odd conv kernel size (padding ``kernel_size // 2`` keeps the spatial size).
        input_size: ``(H, W)`` or an int for square inputs; must stay >= 1 after the poolings.
        activation: ``"relu"`` or ``"tanh"``. dropout: drop probability before the classifier.
        bias: biases in every layer (default False). rule: only ``"bp"`` is implemented for the CNN.
        seed: seeds the init (He-uniform with ``fan_in = C_in·k·k`` for convs).
        conv_factory, linear_factory: build the conv / classifier layers instead of ``nn.Conv2d`` /
            ``nn.Linear`` (they initialise themselves).
        device, dtype: where parameters live.

    Shapes: ``x: [batch, in_channels, H, W]`` -> logits ``[batch, n_classes]``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        n_classes: int = 10,
        channels: Sequence[int] = (16, 32),
        kernel_size: int = 3,
        input_size: int | tuple[int, int] = 28,
        activation: str = "relu",
        dropout: float = 0.0,
        bias: bool = False,
        rule: str = "bp",
        seed: int | None = None,
        conv_factory: ConvFactory | None = None,
        linear_factory: LinearFactory | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if rule != "bp":
            raise ValueError(
                f"SmallCNN.rule must be 'bp' (FA/DFA are implemented for the MLP only), got {rule!r}"
            )
        channels = tuple(int(c) for c in channels)
        if in_channels < 1 or n_classes < 1 or not channels or any(c < 1 for c in channels):
            raise ValueError(
                "SmallCNN.in_channels, n_classes and every entry of channels must be >= 1 (channels non-empty), "
                f"got in_channels={in_channels}, n_classes={n_classes}, channels={list(channels)}"
            )
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"SmallCNN.kernel_size must be an odd integer >= 1, got {kernel_size}")
        h, w = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
        if len(channels) > cnn_max_blocks(h, w):
            raise ValueError(
                f"SmallCNN.input_size {h}x{w} is too small for {len(channels)} 2x2 poolings; "
                f"need >= {2 ** len(channels)} per side"
            )
        ph, pw = h // 2 ** len(channels), w // 2 ** len(channels)
        _check_dropout(dropout, "SmallCNN")
        self.in_channels, self.n_classes, self.channels = in_channels, n_classes, channels
        self.kernel_size, self.input_size = kernel_size, (h, w)
        self.activation, self.dropout, self.bias, self.rule = activation, float(dropout), bool(bias), rule
        self.act = _activation(activation, "SmallCNN")
        self.pool = nn.MaxPool2d(2)
        g, _, drop_seed = _seeded_streams(seed)
        self.drop = Dropout(dropout, drop_seed) if dropout > 0 else nn.Identity()
        convs: list[nn.Module] = []
        c_in = in_channels
        for c_out in channels:
            if conv_factory is not None:
                conv = conv_factory(c_in, c_out, kernel_size, kernel_size // 2, bias)
            else:
                conv = nn.Conv2d(c_in, c_out, kernel_size, padding=kernel_size // 2, bias=bias)
                _he_uniform_layer_(conv.weight, conv.bias, g)
            convs.append(conv)
            c_in = c_out
        self.convs = nn.ModuleList(convs)
        n_flat = c_in * ph * pw
        if linear_factory is not None:
            self.classifier = linear_factory(n_flat, n_classes, bias)
        else:
            self.classifier = nn.Linear(n_flat, n_classes, bias=bias)
            _he_uniform_layer_(self.classifier.weight, self.classifier.bias, g)
        self.to(device=device, dtype=dtype)

    def hidden_layers(self) -> list[nn.Module]:
        """The conv layers, forward order."""
        return list(self.convs)

    def output_layer(self) -> nn.Module:
        """The linear classifier."""
        return self.classifier

    def forward(self, x: Tensor) -> Tensor:
        """x: ``[batch, in_channels, H, W]`` -> logits ``[batch, n_classes]``."""
        h = x
        for conv in self.convs:
            h = self.pool(self.act(conv(h)))
        return self.classifier(self.drop(h.flatten(1)))

    def extra_repr(self) -> str:
        return f"channels={list(self.channels)}, input_size={self.input_size}, activation={self.activation!r}"


DEFAULT_HIDDEN: dict[str, tuple[int, ...]] = {"mlp": (256, 256), "cnn": (16, 32)}
"""Each model's ``hidden`` when none is given: the MLP's hidden widths (the reference network), the CNN's conv
channels per block."""


def weight_count(name: str, *, input_shape: Sequence[int], n_classes: int, hidden: Sequence[int] | None = None,
                 kernel_size: int = 3, bias: bool = False) -> int:
    """The number of trainable parameters of :func:`build_model`'s network, by arithmetic alone (nothing is
    allocated, so it also answers for a network too large to build). Arguments as :func:`build_model`'s; a name
    or shape it would refuse is not checked here (0 weights for an input the CNN cannot pool)."""
    shape = tuple(int(s) for s in input_shape)
    if name.lower() == "mlp":
        sizes = [math.prod(shape), *(hidden if hidden is not None else DEFAULT_HIDDEN["mlp"]), n_classes]
        return sum(a * b + (b if bias else 0) for a, b in zip(sizes[:-1], sizes[1:]))
    channels = [int(c) for c in (hidden if hidden is not None else DEFAULT_HIDDEN["cnn"])]
    ins = [shape[0], *channels[:-1]]
    convs = sum(c_in * c_out * kernel_size ** 2 + (c_out if bias else 0) for c_in, c_out in zip(ins, channels))
    ph, pw = (shape[1] // 2 ** len(channels), shape[2] // 2 ** len(channels)) if len(shape) == 3 else (0, 0)
    n_flat = channels[-1] * ph * pw
    return convs + n_flat * n_classes + (n_classes if bias else 0)


def build_model(
    name: str,
    *,
    input_shape: Sequence[int],
    n_classes: int,
    hidden: Sequence[int] | None = None,
    activation: str = "relu",
    dropout: float = 0.0,
    rule: str = "bp",
    seed: int | None = None,
    bias: bool = False,
    kernel_size: int = 3,
    linear_factory: LinearFactory | None = None,
    conv_factory: ConvFactory | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> nn.Module:
    """Build a model by name.

    Args:
        name: ``"mlp"`` or ``"cnn"``.
        input_shape: one sample's shape, e.g. ``(1, 28, 28)``; the MLP flattens it, the CNN needs
            ``(C, H, W)``.
        n_classes: output width.
        hidden: MLP hidden widths (default ``(256, 256)``, the reference network); for ``"cnn"`` the conv
            channels per block (default ``(16, 32)``).
        activation, dropout, rule, seed, bias: see :class:`MLP` / :class:`SmallCNN`.
        kernel_size, conv_factory: CNN only. linear_factory: both.
        device, dtype: where parameters live.

    Raises:
        ValueError: unknown ``name`` (lists the valid ones), ``rule`` other than ``"bp"`` for the CNN, or
            any invalid argument.
    """
    key = name.lower() if isinstance(name, str) else name
    if key not in MODEL_NAMES:
        raise ValueError(f"build_model: unknown model {name!r}; valid names: {', '.join(MODEL_NAMES)}"
                         f"{did_you_mean(name, MODEL_NAMES)}")
    shape = tuple(int(s) for s in input_shape)
    if not shape or any(s < 1 for s in shape):
        raise ValueError(f"build_model.input_shape must be non-empty with entries >= 1, got {tuple(input_shape)}")
    if key == "mlp":
        if conv_factory is not None:
            raise ValueError("build_model: conv_factory applies to 'cnn' only, got it for 'mlp'")
        widths = tuple(hidden) if hidden is not None else DEFAULT_HIDDEN["mlp"]
        return MLP(
            [math.prod(shape), *widths, n_classes],
            activation=activation,
            dropout=dropout,
            bias=bias,
            rule=rule,
            seed=seed,
            linear_factory=linear_factory,
            device=device,
            dtype=dtype,
        )
    if len(shape) != 3:
        raise ValueError(f"build_model('cnn').input_shape must be (C, H, W), got {shape}")
    return SmallCNN(
        in_channels=shape[0],
        n_classes=n_classes,
        channels=tuple(hidden) if hidden is not None else DEFAULT_HIDDEN["cnn"],
        kernel_size=kernel_size,
        input_size=(shape[1], shape[2]),
        activation=activation,
        dropout=dropout,
        bias=bias,
        rule=rule,
        seed=seed,
        conv_factory=conv_factory,
        linear_factory=linear_factory,
        device=device,
        dtype=dtype,
    )
