""""Did you mean ...?" for a name chosen from a fixed set (a data set, device preset, mode, optimizer, field).

Every message that rejects such a name lists the valid ones; :func:`did_you_mean` (one name) and
:func:`did_you_mean_each` (several unknown names, e.g. fields) give the text appended to it when one valid name is
close to what was typed. It lives here, in the lowest package, so that devices/, crossbar/ and imc_grapes/ share one
implementation (:mod:`imc_grapes.suggest` re-exports it and adds the argparse side).
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

__all__ = ["CUTOFF", "close_match", "did_you_mean", "did_you_mean_each"]

#: :func:`difflib.get_close_matches`'s similarity cutoff (its default): ``mnsit`` -> ``mnist``, ``adm`` -> ``adam``,
#: but nothing for ``cifar`` among ``mnist, fashion-mnist, synthetic``
CUTOFF = 0.6


#: other spellings of the short training fields (``TrainConfig``'s ``lr``, ``epochs``, ``batch_size``, ``seed``),
#: common in other tools and too far from the field for difflib (``lrate`` is 0.57 similar to ``lr``, below
#: :data:`CUTOFF`; ``--bs`` is nearer ``--seed`` than ``--batch-size``), keyed by :func:`_spelling`:
#: :func:`close_match` names the field when it is among the valid names, as a key (``lrate`` -> ``lr``) or as an
#: option (``--learning-rate`` -> ``--lr``). A name not in the table is left to difflib.
SYNONYMS: dict[str, str] = {
    **dict.fromkeys(("lrate", "learning_rate", "learningrate"), "lr"),
    **dict.fromkeys(("epoch", "n_epochs", "num_epochs", "nepochs", "max_epochs"), "epochs"),
    **dict.fromkeys(("bs", "batch", "batchsize", "minibatch", "minibatch_size", "mini_batch_size"), "batch_size"),
    **dict.fromkeys(("seeds", "random_seed", "rng_seed", "random_state"), "seed"),
}


def _spelling(name: str) -> str:
    """``name`` as :data:`SYNONYMS` is keyed: lower case, an option's leading dashes dropped, ``-`` read as ``_``
    (``--Learning-Rate`` -> ``learning_rate``)."""
    return name.lower().lstrip("-").replace("-", "_")


def _synonym(value: str, choices: Sequence[str]) -> str | None:
    """The entry of ``choices`` that :data:`SYNONYMS` gives for ``value`` (compared by :func:`_spelling`): the field
    itself, or, where only its plural is valid, that (``random_seed`` -> ``seeds`` of a compare spec); None when
    ``value`` is no synonym, or the field is not among ``choices`` exactly once."""
    field = SYNONYMS.get(_spelling(value))
    if field is None:
        return None
    for name in (field, f"{field}s"):
        found = [c for c in choices if _spelling(c) == name]
        if found:
            return found[0] if len(found) == 1 else None
    return None


def close_match(value: object, valid: Iterable[object], abbreviations: bool = False) -> str | None:
    """The entry of ``valid`` closest to ``value`` (:func:`difflib.get_close_matches`, similarity ≥ :data:`CUTOFF`,
    letter case ignored, so that ``reramsb`` finds ``ReRamSB``), or None: when none is that close, or ``value`` is
    not a string (a number typed for a name has no spelling to correct). A common other name of a short training
    field (:data:`SYNONYMS`: ``lrate``, ``--learning-rate``, ``bs``) finds that field first, when it is valid.
    ``abbreviations``: a ``value`` that begins exactly one entry (``--hid`` of ``--hidden``, for a command line that
    takes no abbreviated option) finds that entry, however short it is (difflib would find another one, or none)."""
    if not isinstance(value, str):
        return None
    choices = [str(v) for v in valid]
    if value in choices:          # the common case, a valid name (messages are built whether or not they are raised)
        return None
    synonym = _synonym(value, choices)
    if synonym is not None:
        return synonym
    names = {v.lower(): v for v in choices}
    if abbreviations:
        started = {n for n in names if n.startswith(value.lower())}
        if len(started) == 1:
            return names[started.pop()]
    found = difflib.get_close_matches(value.lower(), list(names), n=1, cutoff=CUTOFF)
    return names[found[0]] if found else None


def did_you_mean(value: object, valid: Iterable[object]) -> str:
    """``"; did you mean 'mnist'?"`` naming :func:`close_match` of ``value`` in ``valid``, or ``""`` when there is
    none: appended to a message that already lists the valid names."""
    match = close_match(value, valid)
    return "" if match is None else f"; did you mean {match!r}?"


def did_you_mean_each(values: Iterable[object], valid: Iterable[object], abbreviations: bool = False) -> str:
    """:func:`did_you_mean` for several unknown names (e.g. fields): ``"; did you mean 'dw_min'?"`` for one,
    ``"; did you mean 'dw_min' for 'dwmin', 'w_max' for 'wmax'?"`` for several (only those with a close match), or
    ``""``. ``abbreviations``: as in :func:`close_match`."""
    valid = list(valid)
    values = list(values)
    pairs = [(v, m) for v in values if (m := close_match(v, valid, abbreviations)) is not None]
    if not pairs:
        return ""
    if len(values) == 1:
        return f"; did you mean {pairs[0][1]!r}?"
    return "; did you mean " + ", ".join(f"{m!r} for {v!r}" for v, m in pairs) + "?"
