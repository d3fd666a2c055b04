"""The shell the language models share: configuration and token checks, the trace, generation.

The causal CRATE language model (:mod:`crate_edu.models.crate_lm`) and its GPT baseline
(:mod:`crate_edu.models.gpt`) are built the same way, as the official nanoGPT-based code builds
them (docs/notes/crate_lm_official_code.md)::

    x^0    = wte[idx] + wpe[0 .. T-1]                 # token + learned position embeddings (B, T, d)
    x^ℓ+1  = layer_ℓ(x^ℓ)                             # causal: row t sees tokens 0 .. t only
    logits = ln_f(x^L) wte^T                          # the head is tied to the embedding  (B, T, V)

Each model file defines its layers and the module tree under the official names
(``transformer.wte``, ``transformer.wpe``, ``transformer.h.{i}``, ``transformer.ln_f``,
``lm_head``); this module adds what is the same for both:

- :class:`LMConfig`, the fields and checks every language model's config has;
- :func:`check_tokens`: a batch of token ids that does not fit is a one-line error that says
  what to change (wrong dtype, shape, device, too long for the context, ids outside the vocabulary);
- :class:`LMLayerTrace`, what one layer computed (for analysis without hooks);
- :class:`LanguageModel`: ``forward(idx)`` -> logits at every position, ``forward_trace``,
  ``generate`` (sampling with temperature and top-k, as the official ``generate``), the official
  initialisation, ``num_params``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from crate_edu.models.base import check_flag, check_float, check_model_sizes, check_positive_int

__all__ = ["LMConfig", "LMLayerTrace", "LanguageModel", "check_tokens", "later_tokens"]


@dataclass(frozen=True)
class LMConfig:
    """Fields every language model's config has (defaults: the published 12-layer CRATE-LM).

    ``vocab_size`` V (GPT-2's 50257 padded to 50304), ``block_size`` the context length T_max (the
    rows of ``wpe``), ``dim`` the token width d, ``depth`` the layers L, ``heads`` the attention
    heads (CRATE: subspaces K; the head width is d / heads), ``dropout`` on the embeddings, the
    attention probabilities and the attention output (official: 0).
    """

    vocab_size: int = 50304
    block_size: int = 1024
    dim: int = 768
    depth: int = 12
    heads: int = 12
    dropout: float = 0.0

    def __post_init__(self):
        check_model_sizes(self, ("vocab_size", "block_size", "dim", "depth", "heads"))
        if self.dim % self.heads:
            choices = [k for k in range(1, self.dim + 1) if self.dim % k == 0]
            raise ValueError(
                f"dim {self.dim} is not divisible by heads {self.heads}; choose heads in {choices}"
            )
        check_float("dropout", self.dropout, 0.0, 1.0)
        check_flag("reference", getattr(self, "reference", False))

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads


_INTEGER_DTYPES = (torch.int64, torch.int32)


def check_tokens(
    idx: object, vocab_size: int, block_size: int | None, name: str, like: Tensor | None = None
) -> None:
    """Raise a one-line error unless ``idx`` is a batch of token ids (B, T) the model can read.

    ``idx`` must be an integer tensor (int64 or int32) of shape (B, T) with 1 <= T <= ``block_size``
    (no upper limit when it is None), ids in [0, ``vocab_size``), on the device of ``like`` (one of
    the model's parameters). B = 0 is allowed.
    """
    if not isinstance(idx, Tensor):
        raise TypeError(
            f"{name} expects a torch.Tensor of token ids (B, T), got {type(idx).__name__}; "
            "make one with torch.tensor([ids])"
        )
    if idx.ndim != 2:
        hint = " (one sequence? add a batch dimension with idx.unsqueeze(0))" if idx.ndim == 1 else ""
        raise ValueError(f"{name} expects token ids of shape (B, T), got shape {tuple(idx.shape)}{hint}")
    if idx.dtype not in _INTEGER_DTYPES:
        dtype = str(idx.dtype).removeprefix("torch.")
        raise TypeError(
            f"{name} expects integer token ids (torch.long), got dtype {dtype}; convert them with idx.long()"
        )
    T = idx.shape[1]
    if T == 0:
        raise ValueError(f"{name} needs at least one token per sequence, got shape {tuple(idx.shape)}")
    if block_size is not None and T > block_size:
        raise ValueError(
            f"{name} reads at most block_size={block_size} tokens, got {T}; crop the context to the last "
            f"{block_size} (idx[:, -{block_size}:]) or build the model with block_size={T}"
        )
    if like is not None and idx.device != like.device and like.device.type != "meta":
        raise ValueError(
            f"{name} is on {like.device} but the token ids are on {idx.device}; move them with "
            f"idx.to('{like.device}')"
        )
    if idx.numel() and not idx.is_meta and not torch.compiler.is_compiling():
        low, high = (int(v) for v in torch.aminmax(idx))
        if low < 0 or high >= vocab_size:
            raise ValueError(
                f"{name} has a vocabulary of {vocab_size} ids (0 .. {vocab_size - 1}), got ids from {low} to "
                f"{high}; encode the text with the model's tokenizer or build it with vocab_size={high + 1}"
            )


def later_tokens(T: int, device: torch.device | str | None = None) -> Tensor:
    """The causal mask (T, T): True where key s comes after query t (s > t), the scores set to −∞."""
    return torch.ones(T, T, dtype=torch.bool, device=device).triu_(1)


@dataclass
class LMLayerTrace:
    """What one layer of a language model computed, for analysis without hooks.

    Attributes:
        z_half: (B, T, d) the stream after the attention step, x + attn(LN(x)).
        z_out: (B, T, d) the layer output.
        codes: (B, T, m) the layer's neurons: CRATE-LM's sparse code z1 of its second ISTA step
            (m = 4d; the coordinates the official interpretability scripts read with a hook on
            ``ista.relu``), the output of CRATE's complete ISTA step (m = d), or the GPT's MLP
            hidden units after the activation (m = 4d; the official hook ``mlp.relu``).
        attn: (B, h, T, T) the causal attention probabilities; row t sums to 1 over tokens 0 .. t.
    """

    z_half: Tensor
    z_out: Tensor
    codes: Tensor
    attn: Tensor


class LanguageModel(nn.Module):
    """The interface shared by CRATE-LM and the GPT baseline.

    Subclasses build ``self.transformer`` (an ``nn.ModuleDict`` with ``wte``, ``wpe``, ``drop``,
    ``h`` and, if the model has a final norm, ``ln_f``) and ``self.lm_head`` tied to ``wte``, set
    ``self.config`` (an :class:`LMConfig`), and give each layer of ``h`` a ``forward_trace``.

    - ``forward(idx)`` -> logits (B, T, V) at every position (the official forward returns only the
      last position's without targets; training needs them all);
    - ``forward_features(idx)`` -> the normalised stream (B, T, d) that the head reads;
    - ``forward_trace(idx)`` -> (logits, [LMLayerTrace per layer]);
    - ``generate(idx, max_new_tokens, temperature, top_k, generator)`` -> (B, T + n) token ids;
    - ``num_params()``: unique parameters (the tied embedding counted once).
    """

    config: LMConfig
    transformer: nn.ModuleDict
    lm_head: nn.Linear

    def init_weights(self) -> None:
        """The official initialisation (nanoGPT's): Linear weights and embeddings N(0, 0.02), biases
        0, every ``c_proj.weight`` N(0, 0.02 / sqrt(2 L)); ISTA dictionaries keep their Kaiming
        initialisation and LayerNorms their ones and zeros."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * self.config.depth))

    def check_input(self, idx: Tensor) -> None:
        cfg = self.config
        check_tokens(idx, cfg.vocab_size, cfg.block_size, type(self).__name__, like=self.lm_head.weight)

    def embed(self, idx: Tensor) -> Tensor:
        """Token ids (B, T) -> x^0 = wte[idx] + wpe[0 .. T-1], then dropout (B, T, d)."""
        self.check_input(idx)
        pos = torch.arange(idx.shape[1], device=idx.device)  # (T,)
        return self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))  # (B, T, d)

    def final_norm(self, x: Tensor) -> Tensor:
        """ln_f(x), or x itself for a model without a final LayerNorm (CRATE's complete ISTA)."""
        return self.transformer.ln_f(x) if "ln_f" in self.transformer else x

    def forward_features(self, idx: Tensor) -> Tensor:
        """Token ids (B, T) -> the stream the head reads, ln_f(x^L) (B, T, d)."""
        x = self.embed(idx)
        for layer in self.transformer.h:
            x = layer(x)  # (B, T, d)
        return self.final_norm(x)

    def forward(self, idx: Tensor) -> Tensor:
        """Token ids (B, T) -> next-token logits at every position (B, T, V)."""
        return self.lm_head(self.forward_features(idx))

    def forward_trace(self, idx: Tensor) -> tuple[Tensor, list[LMLayerTrace]]:
        """The logits (B, T, V) and each layer's :class:`LMLayerTrace` (the attention computed with
        the reference arithmetic, so that the T × T probabilities exist)."""
        x = self.embed(idx)
        traces = []
        for layer in self.transformer.h:
            x, trace = layer.forward_trace(x)
            traces.append(trace)
        return self.lm_head(self.final_norm(x)), traces

    @torch.no_grad()
    def generate(
        self,
        idx: Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Continue each sequence of ``idx`` (B, T) by ``max_new_tokens`` sampled tokens: (B, T + n).

        As the official ``generate``: each step runs the model on the last ``block_size`` tokens
        (no cache), divides the last position's logits by ``temperature``, keeps the ``top_k``
        largest (if given; ``top_k=1`` is greedy decoding) and samples from the softmax, with
        ``generator`` for reproducible samples. The model's mode is left as it is: call
        ``model.eval()`` first to switch dropout off.
        """
        check_positive_int("max_new_tokens", max_new_tokens, minimum=0)
        check_float("temperature", temperature, 0.0, math.inf)
        if not float(temperature) > 0:
            raise ValueError(
                f"temperature must be positive (1.0 samples the model's distribution), got {temperature!r}"
            )
        check_positive_int("top_k", top_k, allow_none=True)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        cfg = self.config
        check_tokens(idx, cfg.vocab_size, None, "generate", like=self.lm_head.weight)  # any length: cropped
        for _ in range(max_new_tokens):
            context = idx[:, -cfg.block_size :]  # crop to the context the model reads      (B, ≤ T_max)
            last = self.forward_features(context)[:, -1]  # only the last position is needed  (B, d)
            logits = self.lm_head(last).float() / temperature  # (B, V)
            if top_k is not None and top_k < logits.shape[-1]:
                kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # the k-th largest       (B, 1)
                logits = logits.masked_fill(logits < kth, float("-inf"))
            probs = F.softmax(logits, dim=-1)  # (B, V)
            nxt = torch.multinomial(probs, num_samples=1, generator=generator)  # (B, 1)
            idx = torch.cat((idx, nxt.to(idx.dtype)), dim=1)
        return idx

    def num_params(self, trainable_only: bool = False) -> int:
        """Unique parameters (the tied ``wte`` / ``lm_head`` matrix counted once)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)
