"""The sparse codes of a language model read as neurons, and an offline interpretability score.

A **neuron** is one coordinate of a layer's ``codes`` (the ``forward_trace`` of
:class:`crate_edu.models.CRATELanguageModel` and :class:`crate_edu.models.GPT`), as the official
CRATE-LM work reads them (``interpret/activations_crate_overcomplete.py``, see
``docs/notes/crate_lm_official_code.md`` §9.1):

- CRATE-LM: the final sparse code ``z1`` of the overcomplete ISTA block (``4d`` per layer; the hook on
  ``ista.relu`` in the official script); with the complete ISTA block, its output (``d``);
- GPT baseline: the post-ReLU hidden unit of the MLP (``4d`` per layer; the hook on ``mlp.relu``).

What this module computes, in the order a notebook uses it:

1. :func:`collect_activations`: every neuron's activation at every position of some text windows,
   kept as one ``(N_positions, m)`` tensor per layer with the token ids aligned
   (:class:`NeuronActivations`);
2. :func:`activation_sparsity`: per layer, the fraction of zeros and the **dead** neurons (never
   non-zero on the sample);
3. :func:`top_contexts`: a neuron's top-activating positions with the text around each, like the
   official ``most_positive_activation_records``;
4. :func:`interpretability_scores` and :func:`compare_interpretability`: an **offline** score of how
   well a simple feature of the text explains each neuron (defined below), summarised per layer.

The interpretability score
--------------------------
The CRATE-LM paper (arXiv 2410.16443) scores a neuron with an LLM pipeline: Mistral-7B writes an
explanation from the top activations and Llama-2-7B simulates the activations from it; the score is
the correlation between real and simulated activations (notes §9.2). That needs two 7B models and
cannot run offline. The score here is an **offline substitute, not the same metric**: it asks how
much of a neuron's activation is explained by one of a few categorical features of the current
position (:data:`FEATURES`):

- ``token``: the current token (for a character tokenizer, the current character);
- ``class``: its character class (:data:`CHAR_CLASSES`: lower, upper, digit, space, newline,
  punctuation, other; for a multi-character token, the class of its first character);
- ``previous class``: the class of the previous token's last character (``start`` at a window's
  first position);
- ``position in word``: 0, 1, 2, 3 or 4+ letters into a word (a run of letters, digits and ``_``),
  or ``outside`` a word.

For each neuron and feature, the **correlation ratio** η² is the fraction of the activation's
variance explained by the feature's category means::

    η² = SS_between / SS_total = Σ_c n_c (ȳ_c − ȳ)² / Σ_i (y_i − ȳ)²

It is 1 when the activation is a function of the feature and near 0 when it is unrelated. A feature
with many categories explains some variance of pure noise by chance (about (K − 1)/(N − 1) for K
categories and N positions), so the score uses the **adjusted** η² (Kelley's ε²,
1 − (SS_within/(N − K)) / (SS_total/(N − 1))), which is about 0 for noise whatever K is; the raw η² is
available from :func:`correlation_ratio`. A neuron's **score** is the best adjusted η² over the
features (a tie goes to the feature with fewer categories). Its **selectivity** is the fraction of
its top-k activations at which the best feature takes its most common value there, reported beside
that value's frequency over all positions (the chance level).
"""

from __future__ import annotations

import math
import string
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "CHAR_CLASSES",
    "FEATURES",
    "NeuronActivations",
    "collect_activations",
    "LayerSparsity",
    "activation_sparsity",
    "NeuronContext",
    "top_contexts",
    "char_class",
    "TextFeatures",
    "text_features",
    "correlation_ratio",
    "NeuronScores",
    "interpretability_scores",
    "summarize_scores",
    "InterpretabilityComparison",
    "compare_interpretability",
]

#: The character classes of the ``class`` and ``previous class`` features, in code order.
CHAR_CLASSES = ("lower", "upper", "digit", "space", "newline", "punctuation", "other")
#: The features the interpretability score tries, in the order of :attr:`NeuronScores.eta2`'s columns.
FEATURES = ("token", "class", "previous class", "position in word")
#: Positions in a word from this one on share one category ("4+").
_WORD_POSITION_CAP = 4
#: correlation_ratio works on blocks of columns of at most this many float64 values (128 MiB).
_BLOCK_VALUES = 2**24


# ---------------------------------------------------------------------------------------------
# Activations
# ---------------------------------------------------------------------------------------------


@dataclass
class NeuronActivations:
    """Every neuron's activation at every position of a sample of text windows.

    Position ``i`` is token ``i % seq_len`` of window ``i // seq_len``; the windows are the rows of
    the input to :func:`collect_activations`, in order.

    Attributes:
        layers: the model layer (0 = first) of each entry of ``values``.
        values: per entry, (N, m) activations of the m neurons at the N positions, stored in
            ``dtype`` (float16 by default: half the memory; values below 6e-8 round to 0 there, so the
            exact sparsity is kept apart in ``nonzero_fraction``).
        tokens: (N,) int64 token id at each position (the token the model has just read).
        seq_len: T, positions per window.
        nonzero_fraction: per entry, (m,) float32 fraction of the N positions where the neuron is
            non-zero, counted on the model's own float32 values.
    """

    layers: tuple[int, ...]
    values: list[Tensor]
    tokens: Tensor
    seq_len: int
    nonzero_fraction: list[Tensor]

    @property
    def n_positions(self) -> int:
        return int(self.tokens.numel())

    @property
    def n_windows(self) -> int:
        return self.n_positions // self.seq_len

    def index(self, layer: int) -> int:
        """The entry of ``values`` holding model layer ``layer`` (one-line error if not collected)."""
        if layer not in self.layers:
            raise ValueError(
                f"layer {layer} was not collected; the activations hold layers {list(self.layers)} "
                "(pass layers=None to collect_activations for all)"
            )
        return self.layers.index(layer)

    def layer(self, layer: int) -> Tensor:
        """(N, m) activations of model layer ``layer``."""
        return self.values[self.index(layer)]

    def width(self, layer: int) -> int:
        """m, the number of neurons of model layer ``layer``."""
        return int(self.layer(layer).shape[1])


def _windows(data: Any, seq_len: int | None, max_windows: int | None) -> Tensor:
    """The first ``max_windows`` (default all) token windows of ``data`` as one (S, T) int64 tensor."""
    if isinstance(data, Tensor):
        if data.dtype.is_floating_point or data.dtype.is_complex or data.dtype == torch.bool:
            raise TypeError(
                f"token ids must be an integer tensor, got dtype {data.dtype}; convert with .long()"
            )
        if data.ndim == 1:
            if seq_len is None:
                raise ValueError(
                    "a 1-D token tensor needs seq_len= (the window length) to be cut into windows"
                )
            n = data.numel() // seq_len
            data = data[: n * seq_len].reshape(n, seq_len)
        if data.ndim != 2:
            raise ValueError(f"token windows must be (S, T) or 1-D, got shape {tuple(data.shape)}")
        windows = data[:max_windows].long()
    elif hasattr(data, "__len__") and hasattr(data, "__getitem__"):  # a Dataset such as TextWindows
        n = len(data) if max_windows is None else min(len(data), max_windows)
        items = [data[i] for i in range(n)]
        rows = [torch.as_tensor(x[0] if isinstance(x, (tuple, list)) else x) for x in items]
        return _windows(torch.stack(rows), None, None) if rows else _windows(torch.zeros(0, 1), None, None)
    else:
        raise TypeError(
            f"expected token windows (an integer tensor (S, T) or a dataset of (x, y) windows), got "
            f"{type(data).__name__}"
        )
    if windows.numel() == 0:
        raise ValueError(f"no token window to run (windows of shape {tuple(windows.shape)})")
    return windows


@torch.no_grad()
def collect_activations(
    model: nn.Module,
    data: Any,
    batch_size: int = 16,
    *,
    layers: Sequence[int] | None = None,
    dtype: torch.dtype = torch.float16,
    max_windows: int | None = None,
    seq_len: int | None = None,
) -> NeuronActivations:
    """Run ``model`` on text windows and keep every neuron's activation at every position.

    Args:
        model: a language model with ``forward_trace(idx) -> (logits, traces)`` whose traces have
            ``codes`` (B, T, m) (CRATE-LM: the sparse code z1; GPT: the post-ReLU MLP hidden units).
        data: token windows: an integer tensor (S, T), a 1-D tensor cut into non-overlapping
            windows of ``seq_len``, or a dataset whose items are ``(x, y)`` windows (``TextWindows``)
            or ``x``.
        batch_size: windows per forward pass.
        layers: which layers to keep (default all); memory is N · m · (bytes of ``dtype``) per layer
            (4096 positions × 512 neurons in float16: 4 MiB).
        dtype: storage dtype of the activations (float16 halves the memory of float32).
        max_windows: use only the first this many windows.
        seq_len: the window length for a 1-D ``data``.

    Returns:
        :class:`NeuronActivations` on the CPU. The model's train/eval mode is restored.
    """
    if not hasattr(model, "forward_trace"):
        raise TypeError(
            f"{type(model).__name__} has no forward_trace; pass a language model (CRATE-LM or GPT)"
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if max_windows is not None and (isinstance(max_windows, bool) or max_windows < 1):
        raise ValueError(f"max_windows must be a positive integer or None, got {max_windows!r}")
    windows = _windows(data, seq_len, max_windows)
    S, T = windows.shape
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    kept: list[list[Tensor]] | None = None
    counts: list[Tensor] = []
    chosen: tuple[int, ...] = ()
    try:
        for start in range(0, S, batch_size):
            x = windows[start : start + batch_size].to(device)  # (B, T)
            _, traces = model.forward_trace(x)
            if kept is None:
                depth = len(traces)
                chosen = tuple(range(depth)) if layers is None else tuple(int(layer) for layer in layers)
                bad = [layer for layer in chosen if not 0 <= layer < depth]
                if bad:
                    raise ValueError(f"layers must be in 0..{depth - 1} for this model, got {bad}")
                if any(traces[layer].codes is None for layer in chosen):
                    raise ValueError(f"{type(model).__name__}'s traces carry no codes to read as neurons")
                kept = [[] for _ in chosen]
                counts = [torch.zeros(traces[layer].codes.shape[-1], dtype=torch.float64) for layer in chosen]
            for j, layer in enumerate(chosen):
                codes = traces[layer].codes.flatten(0, 1)  # (B·T, m)
                counts[j] += (codes != 0).sum(0).double().cpu()
                kept[j].append(codes.to(dtype).cpu())
    finally:
        model.train(was_training)
    assert kept is not None  # S ≥ 1 by _windows
    n = S * T
    return NeuronActivations(
        layers=chosen,
        values=[torch.cat(parts) for parts in kept],
        tokens=windows.reshape(-1).cpu(),
        seq_len=T,
        nonzero_fraction=[(c / n).float() for c in counts],
    )


@dataclass
class LayerSparsity:
    """How sparse one layer's neurons are on a sample.

    Attributes:
        layer: the model layer.
        zero_fraction: fraction of all (position, neuron) activations that are exactly zero.
        dead_fraction: fraction of the neurons never non-zero on the sample (dead).
        dead: (m,) bool, which neurons are dead.
        nonzero_fraction: (m,) each neuron's fraction of positions where it is non-zero.
    """

    layer: int
    zero_fraction: float
    dead_fraction: float
    dead: np.ndarray
    nonzero_fraction: np.ndarray


def activation_sparsity(acts: NeuronActivations) -> list[LayerSparsity]:
    """Per collected layer: the fraction of zero activations and the dead neurons (exact counts)."""
    out = []
    for layer, frac in zip(acts.layers, acts.nonzero_fraction, strict=True):
        f = frac.double().numpy()
        dead = f == 0
        out.append(LayerSparsity(layer, float(1 - f.mean()), float(dead.mean()), dead, f.astype(np.float32)))
    return out


# ---------------------------------------------------------------------------------------------
# Top-activating contexts
# ---------------------------------------------------------------------------------------------


def _decoder(decode: Callable[[list[int]], str] | Any | None) -> Callable[[list[int]], str] | None:
    """A ``decode(ids) -> str`` from a callable or an object with ``.decode`` (a tokenizer)."""
    if hasattr(decode, "decode"):
        return decode.decode
    if decode is None or callable(decode):
        return decode
    raise TypeError(f"decode must be a function ids -> text or a tokenizer, got {type(decode).__name__}")


@dataclass
class NeuronContext:
    """One top-activating position of a neuron and the text around it (within its window).

    Attributes:
        layer, neuron: which neuron.
        activation: its activation at the position.
        window, position: the window (row of the input) and the position in it.
        token_ids: the context's token ids, ``width`` before to ``width`` after the position (cut at
            the window's edges: the model saw nothing beyond them).
        activations: the neuron's activation at each context token (same length).
        center: the index of the position in ``token_ids``.
        token_texts: each token decoded alone (empty without a ``decode``).
    """

    layer: int
    neuron: int
    activation: float
    window: int
    position: int
    token_ids: list[int]
    activations: list[float]
    center: int
    token_texts: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        """The decoded context (the tokens' texts joined)."""
        return "".join(self.token_texts)


def _check_neuron(acts: NeuronActivations, layer: int, neuron: int) -> Tensor:
    values = acts.layer(layer)
    m = values.shape[1]
    if isinstance(neuron, bool) or not isinstance(neuron, (int, np.integer)) or not 0 <= neuron < m:
        raise ValueError(f"neuron must be an integer in 0..{m - 1} for layer {layer}, got {neuron!r}")
    return values[:, int(neuron)].float()  # (N,)


def top_contexts(
    acts: NeuronActivations,
    layer: int,
    neuron: int,
    k: int = 10,
    width: int = 16,
    decode: Callable[[list[int]], str] | Any | None = None,
) -> list[NeuronContext]:
    """The ``k`` positions where a neuron is most active, each with its context.

    Only positions with a positive activation count (a dead neuron has none; a neuron active at 3
    positions gives 3). Ties go to the earlier position. Unlike the official dump, which cuts a
    context ``[p−32, p+32)`` from the flattened stream, a context stays inside its window.

    Args:
        acts: from :func:`collect_activations`.
        layer, neuron: which neuron.
        k: how many positions; width: tokens on each side of the position.
        decode: a tokenizer (``.decode``) or a function ids -> text, to fill ``token_texts``.
    """
    if k < 1 or width < 0:
        raise ValueError(f"need k >= 1 and width >= 0, got k={k}, width={width}")
    v = _check_neuron(acts, layer, neuron)  # (N,)
    dec = _decoder(decode)
    order = torch.sort(v, descending=True, stable=True).indices[:k]
    T = acts.seq_len
    out = []
    for p in order.tolist():
        if v[p] <= 0:
            break
        w, t = divmod(p, T)
        lo, hi = max(w * T, p - width), min((w + 1) * T, p + width + 1)
        ids = acts.tokens[lo:hi].tolist()
        out.append(
            NeuronContext(
                layer=layer,
                neuron=int(neuron),
                activation=float(v[p]),
                window=w,
                position=t,
                token_ids=ids,
                activations=v[lo:hi].tolist(),
                center=p - lo,
                token_texts=[dec([i]) for i in ids] if dec is not None else [],
            )
        )
    return out


# ---------------------------------------------------------------------------------------------
# Features of the text
# ---------------------------------------------------------------------------------------------


def char_class(c: str) -> str:
    """The class of a character (:data:`CHAR_CLASSES`); of the first character for a longer text."""
    if not c:
        return "other"
    c = c[0]
    if c == "\n":
        return "newline"
    if c.isspace():
        return "space"
    if c.isdigit():
        return "digit"
    if c.islower():
        return "lower"
    if c.isupper():
        return "upper"
    if c in string.punctuation:
        return "punctuation"
    return "other"


def _is_word_char(c: str) -> bool:
    return c.isalnum() or c == "_"


@dataclass
class TextFeatures:
    """Categorical features of every position of a token stream.

    Attributes:
        names: the feature names (:data:`FEATURES`).
        codes: (F, N) int64, the category of each position under each feature.
        labels: per feature, the name of each category code.
    """

    names: tuple[str, ...]
    codes: np.ndarray
    labels: list[list[str]]

    def feature(self, name: str) -> tuple[np.ndarray, list[str]]:
        """(codes (N,), labels) of one feature."""
        if name not in self.names:
            raise ValueError(f"unknown feature {name!r}; choose one of {list(self.names)}")
        i = self.names.index(name)
        return self.codes[i], self.labels[i]


def text_features(
    tokens: Tensor | np.ndarray, seq_len: int, decode: Callable[[list[int]], str] | Any
) -> TextFeatures:
    """The features of :data:`FEATURES` at each position of ``tokens`` (N,), windows of ``seq_len``.

    Each token is decoded alone; the ``previous class`` and ``position in word`` features do not
    look across a window's start (the model did not either).
    """
    dec = _decoder(decode)
    if dec is None:
        raise ValueError("text_features needs decode (a tokenizer or a function ids -> text)")
    tok = np.asarray(tokens, dtype=np.int64).reshape(-1)  # (N,)
    N = tok.size
    vocab, inverse = np.unique(tok, return_inverse=True)  # the distinct ids and each position's index
    texts = [dec([int(i)]) for i in vocab]
    first_class = np.array([CHAR_CLASSES.index(char_class(s)) for s in texts], dtype=np.int64)
    last_class = np.array([CHAR_CLASSES.index(char_class(s[-1:])) for s in texts], dtype=np.int64)
    starts_word = np.array([_is_word_char(s[:1]) for s in texts])
    ends_word = np.array([_is_word_char(s[-1:]) for s in texts])
    # a BPE token such as " the" starts a new word after its leading spaces
    has_word = np.array([_is_word_char(s.lstrip()[:1]) for s in texts])

    first = np.arange(N) % seq_len == 0  # (N,) a window's first position
    start = len(CHAR_CLASSES)  # the extra "start" category of the previous class
    prev_class = np.empty(N, dtype=np.int64)
    prev_class[1:] = last_class[inverse[:-1]]
    prev_class[first] = start

    # position in word: run length of positions that continue the word of the previous position
    cont = np.zeros(N, dtype=bool)
    cont[1:] = starts_word[inverse[1:]] & ends_word[inverse[:-1]]
    cont[first] = False
    idx = np.arange(N)
    last_reset = np.maximum.accumulate(np.where(cont, 0, idx))
    pos = np.minimum(idx - last_reset, _WORD_POSITION_CAP)
    outside = _WORD_POSITION_CAP + 1
    pos[~has_word[inverse]] = outside

    codes = np.stack([inverse, first_class[inverse], prev_class, pos]).astype(np.int64)  # (4, N)
    labels = [
        [repr(s)[1:-1] for s in texts],
        list(CHAR_CLASSES),
        [*CHAR_CLASSES, "start"],
        [*(str(i) for i in range(_WORD_POSITION_CAP)), f"{_WORD_POSITION_CAP}+", "outside"],
    ]
    return TextFeatures(FEATURES, codes, labels)


# ---------------------------------------------------------------------------------------------
# The score
# ---------------------------------------------------------------------------------------------


def correlation_ratio(
    values: Tensor | np.ndarray, categories: Tensor | np.ndarray, *, adjusted: bool = True
) -> np.ndarray:
    """η² of each column of ``values`` (N, m) against the categories (N,) of one feature.

    η² = SS_between / SS_total (the fraction of the variance explained by the category means); with
    ``adjusted`` (default), Kelley's ε² = 1 − (SS_within / (N − K)) / (SS_total / (N − 1)), K the
    number of categories present, which removes the chance share a K-category feature explains of
    unrelated values (it can be slightly negative). Computed in float64, in blocks of columns.
    ``categories`` may also be (F, N), F features at once: the result is then (m, F).

    Returns:
        (m,) float64 (or (m, F)); NaN for a constant column (nothing to explain) or, adjusted, when
        N ≤ K.
    """
    v = torch.as_tensor(values)
    if v.ndim == 1:
        v = v[:, None]
    cats = torch.as_tensor(np.asarray(categories), dtype=torch.long)
    one_feature = cats.ndim == 1
    cats = cats.reshape(1, -1) if one_feature else cats  # (F, N)
    N, m = v.shape
    if cats.ndim != 2 or cats.shape[1] != N:
        raise ValueError(f"values have {N} positions but categories have shape {tuple(cats.shape)}")
    if N == 0:
        raise ValueError("no positions to score")
    if int(cats.min()) < 0:
        raise ValueError("category codes must be non-negative integers")
    counts = [torch.bincount(c).double() for c in cats]  # per feature: positions per category (K,)
    out = np.empty((m, len(counts)), dtype=np.float64)
    block = max(1, _BLOCK_VALUES // N)  # columns per block: N · block float64 values
    for lo in range(0, m, block):
        x = v[:, lo : lo + block].double()  # (N, b)
        x0 = x - x.mean(0)  # (N, b) centred
        ss_total = (x0 * x0).sum(0)  # (b,)
        # a constant column: nothing to explain (relative to its scale, to absorb rounding)
        constant = ss_total <= 1e-20 * (x * x).sum(0)
        for f, (cat, n) in enumerate(zip(cats, counts, strict=True)):
            present = n > 0
            K = int(present.sum())
            sums = torch.zeros(n.numel(), x.shape[1], dtype=torch.float64).index_add_(0, cat, x0)  # (K, b)
            ss_between = (sums[present] ** 2 / n[present, None]).sum(0)  # Σ_c n_c (ȳ_c − ȳ)²  (b,)
            if not adjusted:
                eta2 = ss_between / ss_total
            elif N > K:
                ss_within = (ss_total - ss_between).clamp_min(0)
                eta2 = 1 - (ss_within / (N - K)) / (ss_total / (N - 1))
            else:
                eta2 = torch.full_like(ss_total, math.nan)
            out[lo : lo + x.shape[1], f] = torch.where(constant, math.nan, eta2).numpy()
    return out[:, 0] if one_feature else out


@dataclass
class NeuronScores:
    """The offline interpretability score of every neuron of one layer.

    Attributes:
        layer: the model layer.
        features: the feature names, the columns of ``eta2``.
        eta2: (m, F) adjusted η² of each neuron against each feature (NaN for a constant neuron).
        score: (m,) the best of its row of ``eta2`` (NaN for a dead or constant neuron).
        best_feature: (m,) index into ``features`` of the best feature (−1 where ``score`` is NaN).
        selectivity: (m,) fraction of the neuron's top-k positive activations at which the best
            feature takes its most common value there (NaN where ``score`` is NaN).
        selectivity_chance: (m,) that value's frequency over all positions (the chance level).
        top_value: (m,) the label of that value ("" where ``score`` is NaN).
        dead: (m,) never non-zero on the sample.
        k: the k of the top-k.
    """

    layer: int
    features: tuple[str, ...]
    eta2: np.ndarray
    score: np.ndarray
    best_feature: np.ndarray
    selectivity: np.ndarray
    selectivity_chance: np.ndarray
    top_value: list[str]
    dead: np.ndarray
    k: int

    @property
    def live(self) -> np.ndarray:
        """(m,) bool: neurons with a score (not dead, not constant)."""
        return np.isfinite(self.score)


def interpretability_scores(
    acts: NeuronActivations,
    decode: Callable[[list[int]], str] | Any,
    *,
    k: int = 20,
    layers: Sequence[int] | None = None,
) -> list[NeuronScores]:
    """The offline interpretability score (module docstring) of every neuron, per collected layer.

    This is an offline substitute for the paper's LLM-simulated explanation score (arXiv 2410.16443:
    Mistral-7B explanations, Llama-2-7B simulation; notes §9.2), not the same metric.

    Args:
        acts: from :func:`collect_activations`.
        decode: the tokenizer (or a function ids -> text) that made the tokens.
        k: top activations for the selectivity.
        layers: which of the collected layers (default all).
    """
    if k < 1:
        raise ValueError(f"k must be a positive integer, got {k}")
    feats = text_features(acts.tokens, acts.seq_len, decode)
    counts = [np.bincount(c) for c in feats.codes]  # per feature: positions per category
    n_categories = np.array([(c > 0).sum() for c in counts], dtype=np.float64)  # (F,) categories present
    out = []
    for layer in acts.layers if layers is None else layers:
        values = acts.layer(layer)  # (N, m)
        m = values.shape[1]
        dead = acts.nonzero_fraction[acts.index(layer)].numpy() == 0
        eta2 = correlation_ratio(values, feats.codes)  # (m, F)
        finite = np.isfinite(eta2)
        score = np.where(finite.any(1), np.nanmax(np.where(finite, eta2, -np.inf), axis=1), np.nan)
        score[dead] = np.nan
        # the best feature; a tie (within 1e-9) goes to the feature with fewer categories (the simpler
        # explanation: a digit detector is explained as well by "token" as by "class")
        tied = finite & (eta2 >= score[:, None] - 1e-9)
        best = np.argmax(np.where(tied, -n_categories[None, :], -np.inf), axis=1)
        best = np.where(np.isfinite(score), best, -1)
        sel = np.full(m, np.nan)
        chance = np.full(m, np.nan)
        top_value = [""] * m
        kk = min(k, values.shape[0])
        top_vals, top_idx = values.float().topk(kk, dim=0)  # (kk, m)
        for j in np.flatnonzero(best >= 0):
            f = int(best[j])
            idx = top_idx[:, j][top_vals[:, j] > 0].numpy()
            if idx.size == 0:
                continue
            cats = feats.codes[f][idx]
            common = np.bincount(cats).argmax()
            sel[j] = float((cats == common).mean())
            chance[j] = counts[f][common] / feats.codes.shape[1]
            top_value[j] = feats.labels[f][common]
        out.append(
            NeuronScores(
                layer=layer,
                features=feats.names,
                eta2=eta2,
                score=score,
                best_feature=best.astype(np.int64),
                selectivity=sel,
                selectivity_chance=chance,
                top_value=top_value,
                dead=dead,
                k=k,
            )
        )
    return out


def _stat(x: np.ndarray, fn: Callable[[np.ndarray], Any]) -> float:
    x = x[np.isfinite(x)]
    return float(fn(x)) if x.size else math.nan


def summarize_scores(scores: Iterable[NeuronScores]) -> list[dict[str, Any]]:
    """One row per layer: neurons, dead fraction, and the mean / median score and selectivity over
    the live neurons, with how many neurons each feature explains best."""
    rows = []
    for s in scores:
        live = s.live
        rows.append(
            {
                "layer": s.layer,
                "neurons": int(s.score.size),
                "live": int(live.sum()),
                "dead_fraction": float(s.dead.mean()),
                "score_mean": _stat(s.score, np.mean),
                "score_median": _stat(s.score, np.median),
                "selectivity_mean": _stat(s.selectivity, np.mean),
                "selectivity_chance_mean": _stat(s.selectivity_chance, np.mean),
                "best_feature_counts": {
                    name: int((s.best_feature == i).sum()) for i, name in enumerate(s.features)
                },
            }
        )
    return rows


@dataclass
class InterpretabilityComparison:
    """The offline interpretability scores of two (or more) models, per layer.

    Attributes:
        names: the models, in order (e.g. ``("CRATE", "GPT")``).
        scores: per model, its :class:`NeuronScores` per layer.
        summary: per model, :func:`summarize_scores` of its scores.
    """

    names: tuple[str, ...]
    scores: dict[str, list[NeuronScores]]
    summary: dict[str, list[dict[str, Any]]]

    def overall(self, name: str) -> dict[str, float]:
        """Mean / median score and selectivity over the live neurons of all layers, and the dead fraction."""
        s = self.scores[name]
        score = np.concatenate([x.score for x in s])
        return {
            "score_mean": _stat(score, np.mean),
            "score_median": _stat(score, np.median),
            "selectivity_mean": _stat(np.concatenate([x.selectivity for x in s]), np.mean),
            "dead_fraction": float(np.concatenate([x.dead for x in s]).mean()),
        }

    def table(self) -> str:
        """A plain-text table: one line per model and layer."""
        lines = [
            f"{'model':<8} {'layer':>5} {'neurons':>7} {'dead':>6} {'score mean':>10} {'median':>7} "
            f"{'select.':>7} {'chance':>7}  best feature"
        ]
        for name in self.names:
            for r in self.summary[name]:
                best = max(r["best_feature_counts"], key=r["best_feature_counts"].get)
                lines.append(
                    f"{name:<8} {r['layer']:>5} {r['neurons']:>7} {r['dead_fraction']:>6.1%} "
                    f"{r['score_mean']:>10.3f} {r['score_median']:>7.3f} {r['selectivity_mean']:>7.2f} "
                    f"{r['selectivity_chance_mean']:>7.2f}  {best}"
                )
        return "\n".join(lines)


def compare_interpretability(
    crate: NeuronActivations | Sequence[NeuronScores],
    gpt: NeuronActivations | Sequence[NeuronScores],
    decode: Callable[[list[int]], str] | Any | None = None,
    *,
    names: tuple[str, str] = ("CRATE", "GPT"),
    k: int = 20,
) -> InterpretabilityComparison:
    """Score two models' neurons the same way and summarise them per layer.

    Each of ``crate`` and ``gpt`` is either its :class:`NeuronActivations` (scored here with
    ``decode``, which is then required) or its already computed :func:`interpretability_scores`.
    The score is the offline substitute of the module docstring, not the paper's LLM-simulated
    explanation score.
    """
    scores: dict[str, list[NeuronScores]] = {}
    for name, x in zip(names, (crate, gpt), strict=True):
        if isinstance(x, NeuronActivations):
            if decode is None:
                raise ValueError("pass decode (the tokenizer) to score activations")
            scores[name] = interpretability_scores(x, decode, k=k)
        else:
            scores[name] = list(x)
    return InterpretabilityComparison(
        tuple(names), scores, {n: summarize_scores(s) for n, s in scores.items()}
    )
