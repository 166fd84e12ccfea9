"""GRAPES (Dellaferrera et al., Nat. Commun. 13, 2022) for torch networks.

* :mod:`.core`: importance / modulation as pure tensor functions.
* :mod:`.hooks`: :func:`attach_grapes`, which applies them to any model through hooks (any optimizer).
* :mod:`.feedback`: the FA and DFA learning rules as autograd pieces.
* :mod:`.initializers`: seeded He-uniform init (the reference code's convention).
"""

from .core import (
    BP_CLIP,
    dfa_modulations,
    importance,
    layer_mean,
    modulation,
    outgoing_importance,
    outgoing_modulation,
    synapse_modulation,
)
from .feedback import DFAContext, DFAFeedback, FALinear, dfa_hidden, dfa_output, fa_linear
from .hooks import (
    MODES,
    RULES,
    GrapesHandle,
    ImportanceFn,
    attach_grapes,
    default_hidden_layers,
    exact_importance,
    exact_outgoing_importance,
)
from .initializers import he_uniform_, make_generator, uniform_

__all__ = [
    "BP_CLIP",
    "importance",
    "outgoing_importance",
    "modulation",
    "outgoing_modulation",
    "layer_mean",
    "synapse_modulation",
    "dfa_modulations",
    "FALinear",
    "fa_linear",
    "DFAContext",
    "DFAFeedback",
    "dfa_output",
    "dfa_hidden",
    "MODES",
    "RULES",
    "ImportanceFn",
    "GrapesHandle",
    "attach_grapes",
    "default_hidden_layers",
    "exact_importance",
    "exact_outgoing_importance",
    "make_generator",
    "he_uniform_",
    "uniform_",
]
