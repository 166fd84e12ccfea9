"""Learning rules other than backpropagation, as autograd pieces: feedback alignment (FA) and direct
feedback alignment (DFA).

Both follow the authors' numpy reference (github.com/IBM/GRAPES, ``numpy_grapes_functions.py``):

* FA: ``δ^l = (B^{l+1} δ^{l+1}) ⊙ f'(a^l)`` with a fixed random ``B^{l+1}`` in place of ``(W^{l+1})ᵀ``.
  The reference stores ``B`` as ``[in, out]``; here ``FALinear.feedback`` has the weight's shape
  ``[out, in]`` and the error sent to the input is ``grad_in = grad_out @ feedback`` (the same product).
  Init (``w_init='he_uniform'``, the reference default): ``B ~ U(-√(6/in), √(6/in))``, the same law as
  the forward weights.
* DFA: ``δ^l = (B^{l+1} e) ⊙ f'(a^l)`` for every hidden layer, ``e = ∂L/∂(output logits)`` (softmax +
  cross-entropy: ``y - t``), the gradient arriving from the layer above is discarded. ``B`` for hidden
  layer ``l`` is ``[out_l, n_classes]``; the reference's ``he_uniform`` init draws it from
  ``U(-√(6/out_l), √(6/out_l))`` (its "fan in" is the input size of the layer above, i.e. ``out_l``).
  The error is injected after the hidden layer's activation and dropout, so autograd multiplies it by
  the dropout mask and ``f'(a^l)`` as the reference does.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.autograd import Function

from crossbar.mapping import _check_size

from .initializers import _he_uniform_layer_, make_generator, uniform_

__all__ = [
    "FALinear",
    "fa_linear",
    "DFAContext",
    "DFAFeedback",
    "dfa_output",
    "dfa_hidden",
]


class _FALinearFn(Function):
    """``y = x Wᵀ + b``; backward: ``grad_x = grad_y B``, ``grad_W = grad_yᵀ x``, ``grad_b = Σ grad_y``."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, x: Tensor, weight: Tensor, bias: Tensor | None, feedback: Tensor
    ) -> Tensor:
        ctx.save_for_backward(x, feedback)
        ctx.has_bias = bias is not None
        return nn.functional.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        x, feedback = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = grad_out @ feedback
        g2 = grad_out.reshape(-1, grad_out.shape[-1])
        if ctx.needs_input_grad[1]:
            grad_w = g2.transpose(0, 1) @ x.reshape(-1, x.shape[-1])
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = g2.sum(dim=0)
        return grad_x, grad_w, grad_b, None


def fa_linear(x: Tensor, weight: Tensor, bias: Tensor | None, feedback: Tensor) -> Tensor:
    """Functional FA linear layer.

    Args:
        x: ``[..., in]``. weight: ``[out, in]``. bias: ``[out]`` or None.
        feedback: ``[out, in]`` fixed random matrix used instead of ``weight`` in the backward pass.

    Returns:
        ``[..., out] = x Wᵀ + b``; the gradient sent to ``x`` is ``grad_out @ feedback``.
    """
    return _FALinearFn.apply(x, weight, bias, feedback)


class FALinear(nn.Module):
    """A linear layer trained by feedback alignment: same forward as ``nn.Linear``, backward through ``B``.

    Args:
        in_features, out_features, bias: as ``nn.Linear`` (but ``bias=False`` by default, as in the
            reference models).
        generator: draws the forward weights (He-uniform, :func:`he_uniform_`) and the bias
            (``U(±1/√in)``).
        feedback_generator: draws ``B`` (defaults to ``generator``); ``B ~ U(±√(6/in))``.
        device, dtype: where the parameters live.

    Attributes:
        weight: ``[out, in]`` parameter. bias: ``[out]`` parameter or None.
        feedback: ``[out, in]`` buffer (moves with ``.to()``, saved in ``state_dict``), never trained.
    """

    feedback: Tensor

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = False,
        *,
        generator: torch.Generator | None = None,
        feedback_generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        in_features = _check_size("FALinear", "in_features", in_features)
        out_features = _check_size("FALinear", "out_features", out_features)
        if not isinstance(bias, bool):
            raise ValueError(f"FALinear.bias must be true or false, got {bias!r}")
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.empty(out_features, device=device, dtype=dtype)) if bias else None
        self.register_buffer("feedback", torch.empty(out_features, in_features, device=device, dtype=dtype))
        g = generator if generator is not None else make_generator(None)
        self.reset_parameters(g)
        self.reset_feedback(feedback_generator if feedback_generator is not None else g)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Re-draw weight (He-uniform) and bias (``U(±1/√in)``) from ``generator``."""
        _he_uniform_layer_(self.weight, self.bias, generator)

    def reset_feedback(self, generator: torch.Generator | None = None) -> None:
        """Re-draw ``B ~ U(±√(6/in))`` (the reference's ``he_uniform`` feedback init)."""
        uniform_(self.feedback, math.sqrt(6.0 / self.in_features), generator)

    def forward(self, x: Tensor) -> Tensor:
        """x: ``[..., in]`` -> ``[..., out]``.

        Raises:
            TypeError: ``x`` is not a tensor.
            ValueError: ``x``'s last dim is not ``in_features``, or ``x`` has another device or (outside
                ``torch.autocast``) dtype than the weights (the messages of :class:`crossbar.AnalogLinear`; torch's
                matmul errors named neither).
        """
        if not isinstance(x, Tensor):
            raise TypeError(f"FALinear: input must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"FALinear: expected input [..., {self.in_features}] (in_features), got "
                             f"{tuple(x.shape)}")
        w = self.weight
        if x.dtype != w.dtype and not torch.is_autocast_enabled(x.device.type):   # autocast casts, as nn.Linear
            raise ValueError(f"FALinear: input dtype must be the layer's, {w.dtype}, got {x.dtype} (convert the input "
                             f"with x.to({w.dtype}), or the layer with .to(dtype))")
        if x.device != w.device:
            raise ValueError(f"FALinear: input must be on the layer's device, {w.device}, got {x.device} (move the "
                             f"input with x.to('{w.device}'), or the layer with .to(device))")
        return fa_linear(x, self.weight, self.bias, self.feedback)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class DFAContext:
    """Holds the output error ``e`` of one forward pass until the hidden layers' backward needs it.

    One context is created per forward pass (so two forwards before one backward do not mix); the
    output's backward, which autograd always runs before any hidden layer's, fills ``e``.
    """

    __slots__ = ("e",)

    def __init__(self) -> None:
        self.e: Tensor | None = None


class _DFAOutputFn(Function):
    @staticmethod
    def forward(ctx, logits: Tensor, context: DFAContext) -> Tensor:  # type: ignore[override]
        ctx.context = context
        return logits.view_as(logits)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        ctx.context.e = grad
        return grad, None


class _DFAHiddenFn(Function):
    @staticmethod
    def forward(ctx, h: Tensor, feedback: Tensor, context: DFAContext) -> Tensor:  # type: ignore[override]
        ctx.context = context
        ctx.save_for_backward(feedback)
        return h.view_as(h)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (feedback,) = ctx.saved_tensors
        e = ctx.context.e
        if e is None:
            raise RuntimeError(
                "DFA: the output error was not captured before a hidden layer's backward; wrap the "
                "network output with dfa_output(logits, context) using the same DFAContext"
            )
        return (e @ feedback.transpose(0, 1)).to(grad.dtype), None, None


def dfa_output(logits: Tensor, context: DFAContext) -> Tensor:
    """Identity on ``logits: [batch, n_classes]``; its backward stores ``e = ∂L/∂logits`` in ``context``."""
    return _DFAOutputFn.apply(logits, context)


def dfa_hidden(h: Tensor, feedback: Tensor, context: DFAContext) -> Tensor:
    """Identity on a hidden output ``h: [batch, out_l]``; backward returns ``e @ Bᵀ`` and discards the
    gradient from above.

    Args:
        h: ``[batch, out_l]`` hidden activation (after dropout).
        feedback: ``B^l: [out_l, n_classes]``.
        context: the :class:`DFAContext` of this forward pass (shared with :func:`dfa_output`).
    """
    return _DFAHiddenFn.apply(h, feedback, context)


class DFAFeedback(nn.Module):
    """Holds one hidden layer's fixed DFA matrix ``feedback: [out_l, n_classes]`` (a buffer).

    ``forward(h, context)`` applies :func:`dfa_hidden`. Init ``U(±√(6/out_l))`` (reference ``he_uniform``).
    """

    feedback: Tensor

    def __init__(
        self,
        out_features: int,
        n_classes: int,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        out_features = _check_size("DFAFeedback", "out_features", out_features)
        n_classes = _check_size("DFAFeedback", "n_classes", n_classes)
        self.out_features = out_features
        self.n_classes = n_classes
        self.register_buffer("feedback", torch.empty(out_features, n_classes, device=device, dtype=dtype))
        self.reset_feedback(generator)

    def reset_feedback(self, generator: torch.Generator | None = None) -> None:
        """Re-draw ``B ~ U(±√(6/out_l))``."""
        uniform_(self.feedback, math.sqrt(6.0 / self.out_features), generator)

    def forward(self, h: Tensor, context: DFAContext | None) -> Tensor:
        """h: ``[batch, out_l]``; identity when ``context`` is None (no backward expected)."""
        if context is None:
            return h
        return dfa_hidden(h, self.feedback, context)

    def extra_repr(self) -> str:
        return f"out_features={self.out_features}, n_classes={self.n_classes}"
