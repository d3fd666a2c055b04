"""CRATE-α-CLIPA (arXiv 2405.20299, §4.3): a CRATE-α image tower and a transformer text tower,
trained contrastively with the CLIPA recipe, as the official PyTorch port builds them.

Read it top to bottom: the attention both towers use, CRATE-α's sparse coding block under the
official names, the residual layer, the image tower, the text tower and the model that compares
them. Faithful to the official ``torch_inference/model/clipa_model.py`` (parameter names, shapes and
arithmetic), so the published ``crate_alpha_CLIPA_L14.pth`` and ``crate_alpha_CLIPA_H14.pth`` load
with ``load_state_dict`` unchanged (``crate_edu.load_official``)::

    image tower (CRATE-α, width W):
      Z^1      = [class_embedding; conv1(img)] + positional_embedding      # (B, N + 1, W)
      Z^{ℓ+½}  = Z^ℓ + MHA(LN(Z^ℓ))             separate q, k, v; no biases  # (B, N + 1, W)
      Z^{ℓ+1}  = Z^{ℓ+½} + D1 · ISTA²(LN(Z^{ℓ+½}); D)                       # (B, N + 1, W)
      f_img    = LN(Z^{L+1}[:, 0]) @ proj                                   # (B, E)
    text tower (a plain transformer, width T):
      X^1      = token_embedding[tokens] + positional_embedding             # (B, C, T)
      X^{ℓ+½}  = X^ℓ + MHA(LN(X^ℓ))             with biases; no mask          # (B, C, T)
      X^{ℓ+1}  = X^{ℓ+½} + MLP(LN(X^{ℓ+½}))     Linear – tanh-GELU – Linear   # (B, C, T)
      f_text   = LN(X^{L+1})[:, -1] @ text_projection^T                    # (B, E)
    logits     = scale · (f_img / (‖f_img‖ + 1e-8)) (f_text / (‖f_text‖ + 1e-8))^T

Departures of the official port from the paper, reproduced here because the checkpoints hold
them (each said again beside its line):

- the image tower's attention has separate query, key and value projections (three slices of one
  ``in_proj_weight``) where CRATE-α's MSSA, and the JAX code that trained the model, have one
  shared projection U^T. A faithful conversion stores U three times; this code computes with the
  three slices as stored and does not assume they are equal;
- the text tower pools the last position (index C − 1, usually padding) with no causal and no
  padding mask: every position attends to every other, padding included;
- ``text_projection`` is declared (T, E) officially but used transposed, ``x @ text_projection.T``
  (it only runs because T = E = 1024 in the published models); here it is declared (E, T), the
  shape its use implies, which is the same shape in every published file;
- the official code creates the text positions and ``text_projection`` with ``torch.empty``
  (uninitialised memory) and draws the image tower's embeddings from N(0, 1). A fresh model here
  is initialised as OpenAI CLIP, which the official file adapts, initialises it (and as the JAX
  code initialises the text tower): see :meth:`CRATEAlphaCLIPA.reset_parameters`;
- its LayerNorm subclass loses its bias on torch >= 2.1 (it passes ``device`` into the ``bias``
  slot); the published files, from Flax, have the biases, and so do the LayerNorms here (eps 1e-6).

The ``reference`` flag: the attention's default path is PyTorch's ``scaled_dot_product_attention``
and ``reference=True`` writes the softmax out (as :class:`crate_edu.models.vit.Attention`); the
sparse coding block is CRATE-α's :class:`~crate_edu.models.crate_alpha.OvercompleteISTA`, whose
``reference=True`` is the official einsums. The rest (embeddings, LayerNorms, the text MLP,
projections) has one path, and this file's arithmetic is the reference.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from crate_edu.models import base
from crate_edu.models.crate_alpha import OvercompleteISTA

__all__ = [
    "MultiheadAttention",
    "CLIPAOvercompleteISTA",
    "ResidualAttentionBlock",
    "ResidualStack",
    "ImageTower",
    "CRATEAlphaCLIPAConfig",
    "CRATEAlphaCLIPA",
    "normalize",
]

#: LayerNorm eps everywhere in the model (the official LayerNorm's default).
LN_EPS = 1e-6


class MultiheadAttention(base.Block):
    """Multi-head self-attention as ``torch.nn.MultiheadAttention`` stores it, batch first.

    ``in_proj_weight`` stacks the query, key and value maps [W_q; W_k; W_v] (3d × d); head i uses
    columns i·p … (i + 1)·p of each (p = d / heads)::

        q, k, v = x W_q^T + b_q, x W_k^T + b_k, x W_v^T + b_v          # (B, N, d) each
        out     = softmax(q_i k_i^T / √p) v_i for each head i          # (B, h, N, p)
        MHA(x)  = [out_1 … out_h] W_out^T + b_out                       # (B, N, d)

    Official image tower: ``bias=False`` (no ``in_proj_bias``, no ``out_proj.bias``); text tower:
    with biases. Departure from CRATE-α's MSSA: q, k and v are three projections, not one shared
    U^T; with W_q = W_k = W_v = U^T and no biases this *is* MSSA
    (``tests/unit/models/test_crate_alpha_clipa.py`` checks it).
    """

    #: Raw matrices that are Dense kernels in the official training code (weight decay reads this).
    kernel_parameters = ("in_proj_weight",)

    def __init__(self, dim: int, heads: int, bias: bool = True, reference: bool = False):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5  # 1/√p
        self.reference = reference
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))  # [W_q; W_k; W_v]
        if bias:
            self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = nn.Linear(dim, dim, bias=bias)
        with torch.no_grad():  # torch's MultiheadAttention initialisation, which the official code gets
            nn.init.xavier_uniform_(self.in_proj_weight)
            if bias:
                nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: Tensor) -> Tensor:
        """MHA(x): (B, N, d) -> (B, N, d)."""
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)  # 3 × (B, N, d)
        q, k, v = (rearrange(t, "b n (h p) -> b h n p", h=self.heads) for t in qkv)  # (B, h, N, p)
        if self.reference:  # the softmax written out
            attn = torch.softmax(q @ k.transpose(-1, -2) * self.scale, dim=-1)  # (B, h, N, N)
            out = attn @ v  # (B, h, N, p)
        else:  # the same numbers, faster
            out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)  # (B, h, N, p)
        return self.out_proj(rearrange(out, "b h n p -> b n (h p)"))  # (B, N, d)

    def forward_parts(self, x: Tensor) -> base.AttentionParts:
        """Keys (B, h, N, p), attention (B, h, N, N) and output (B, N, d), for analysis (attention
        maps): always the reference arithmetic, so that the N × N attention exists."""
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (rearrange(t, "b n (h p) -> b h n p", h=self.heads) for t in qkv)  # (B, h, N, p)
        attn = torch.softmax(q @ k.transpose(-1, -2) * self.scale, dim=-1)  # (B, h, N, N)
        out = self.out_proj(rearrange(attn @ v, "b h n p -> b n (h p)"))  # (B, N, d)
        return base.AttentionParts(proj=k, attn=attn, out=out)

    def extra_repr(self) -> str:
        d = self.in_proj_weight.shape[1]
        return (
            f"dim={d}, heads={self.heads}, bias={self.in_proj_bias is not None}, reference={self.reference}"
        )


class CLIPAOvercompleteISTA(OvercompleteISTA):
    """CRATE-α's sparse coding block (:class:`~crate_edu.models.crate_alpha.OvercompleteISTA`:
    two ISTA steps from zero on D, decoded by D1), stored under the official CLIPA names.

    The official CLIPA file keeps CLIP's MLP names for the two dictionaries: ``mlp.c_fc`` is D and
    ``mlp.c_proj`` is D1 (both d × 4d, raw parameters). This class is the classifier's block with
    a two-entry key map applied when a state dict is written or read, so the code keeps the
    paper's names and files keep the official ones.
    """

    #: crate_edu's name -> the official CLIPA name.
    OFFICIAL_NAMES = {"D": "c_fc", "D1": "c_proj"}

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        for ours, official in self.OFFICIAL_NAMES.items():  # D, D1 -> c_fc, c_proj (order kept)
            if prefix + ours in destination:
                destination[prefix + official] = destination.pop(prefix + ours)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for ours, official in self.OFFICIAL_NAMES.items():  # c_fc, c_proj -> D, D1
            if prefix + official in state_dict:
                state_dict[prefix + ours] = state_dict.pop(prefix + official)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class ResidualAttentionBlock(nn.Module):
    """A pre-LN residual layer, both towers (official names ``attn``, ``ln_1``, ``mlp``, ``ln_2``)::

    Z^{ℓ+½} = Z^ℓ + attn(ln_1(Z^ℓ))
    Z^{ℓ+1} = Z^{ℓ+½} + mlp(ln_2(Z^{ℓ+½}))

    ``mlp`` is CRATE-α's sparse coding block in the image tower (so Z^{ℓ+1} = Z^{ℓ+½} + D1 A2, the
    CRATE-α layer with MHA in place of MSSA) and Linear – tanh-GELU – Linear in the text tower.
    """

    def __init__(self, dim: int, heads: int, mlp: nn.Module, attn_bias: bool, reference: bool = False):
        super().__init__()
        self.attn = MultiheadAttention(dim, heads, bias=attn_bias, reference=reference)
        self.ln_1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = mlp
        self.ln_2 = nn.LayerNorm(dim, eps=LN_EPS)

    def forward(self, x: Tensor) -> Tensor:
        """(B, N, d) -> (B, N, d)."""
        x = x + self.attn(self.ln_1(x))  # Z^{ℓ+½} = Z^ℓ + attn(LN(Z^ℓ))                     (B, N, d)
        return x + self.mlp(self.ln_2(x))  # Z^{ℓ+1} = Z^{ℓ+½} + mlp(LN(Z^{ℓ+½}))             (B, N, d)

    def forward_trace(self, x: Tensor) -> tuple[Tensor, base.LayerTrace]:
        """The output and a :class:`~crate_edu.models.base.LayerTrace` (keys, attention, Z^{ℓ+½},
        Z^{ℓ+1}, and the sparse codes A2 in the image tower), for attention maps and probes."""
        parts = self.attn.forward_parts(self.ln_1(x))  # always the written-out softmax
        z_half = x + parts.out  # (B, N, d)
        y = self.ln_2(z_half)
        codes = self.mlp.forward_parts(y) if isinstance(self.mlp, OvercompleteISTA) else None
        z_out = z_half + (codes.out if codes is not None else self.mlp(y))  # (B, N, d)
        trace = base.LayerTrace(parts.proj, parts.attn, z_half, z_out, codes.codes if codes else None)
        return z_out, trace


def text_mlp(dim: int) -> nn.Sequential:
    """The text tower's MLP: Linear(T, 4T) – GELU (tanh approximation, as officially) – Linear(4T, T)."""
    return nn.Sequential(
        OrderedDict(
            c_fc=nn.Linear(dim, 4 * dim),
            gelu=nn.GELU(approximate="tanh"),
            c_proj=nn.Linear(4 * dim, dim),
        )
    )


class ResidualStack(nn.Module):
    """The layers of a tower under the official name ``resblocks``: Z^{ℓ+1} = layer_ℓ(Z^ℓ).

    Batch first here; the official code runs the same layers sequence first (L, B, d), the same
    numbers within float rounding."""

    def __init__(self, layers: list[nn.Module]):
        super().__init__()
        self.resblocks = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.resblocks(x)  # (B, N, d)


class ImageTower(nn.Module):
    """The CRATE-α image tower (official ``visual``): conv patches, [CLS] first, CRATE-α layers with
    MHA, LayerNorm of the [CLS] token, projection to the shared space.

    There is no LayerNorm before the layers (OpenAI CLIP has ``ln_pre``; this model does not), and
    the patch embedding has no bias (the CLIPA configs set ``emb_head_bias=False``; the CRATE-α
    classifier's has one).
    """

    kernel_parameters = ("proj",)  # the official head, a Dense kernel (weight decay reads this)

    def __init__(self, cfg: CRATEAlphaCLIPAConfig):
        super().__init__()
        width = cfg.vision_width
        self.class_embedding = nn.Parameter(torch.empty(width))  # [CLS]                   (W,)
        self.positional_embedding = nn.Parameter(torch.empty(cfg.num_patches + 1, width))  # (N + 1, W)
        self.proj = nn.Parameter(torch.empty(width, cfg.embed_dim))  # used as x @ proj    (W, E)
        self.conv1 = nn.Conv2d(3, width, kernel_size=cfg.patch_size, stride=cfg.patch_size, bias=False)
        self.transformer = ResidualStack(
            [
                ResidualAttentionBlock(
                    width,
                    cfg.vision_heads,
                    CLIPAOvercompleteISTA(width, cfg.overcomplete_ratio, cfg.eta, cfg.lambd, cfg.reference),
                    attn_bias=False,  # officially nn.MultiheadAttention(bias=False)
                    reference=cfg.reference,
                )
                for _ in range(cfg.vision_depth)
            ]
        )
        self.ln_post = nn.LayerNorm(width, eps=LN_EPS)

    def embed(self, images: Tensor) -> Tensor:
        """Images (B, 3, H, W) -> tokens Z^1 (B, N + 1, W), [CLS] first, positions added."""
        x = rearrange(self.conv1(images), "b w gh gw -> b (gh gw) w")  # patches, row-major  (B, N, W)
        cls = self.class_embedding.expand(x.shape[0], 1, -1)  # (B, 1, W)
        return torch.cat([cls, x], dim=1) + self.positional_embedding  # (B, N + 1, W)

    def forward(self, images: Tensor) -> Tensor:
        """Images (B, 3, H, W) -> image features (B, E), not normalised."""
        x = self.transformer(self.embed(images))  # Z^{L+1}                                 (B, N + 1, W)
        x = self.ln_post(x[:, 0])  # LN of the [CLS] token only                              (B, W)
        return x @ self.proj  # f_img = LN(z_cls) proj, no transpose                          (B, E)

    def forward_trace(self, images: Tensor) -> tuple[Tensor, list[base.LayerTrace]]:
        """Image features (B, E) and one :class:`~crate_edu.models.base.LayerTrace` per layer."""
        x, traces = self.embed(images), []
        for block in self.transformer.resblocks:
            x, trace = block.forward_trace(x)
            traces.append(trace)
        return self.ln_post(x[:, 0]) @ self.proj, traces


@dataclass(frozen=True)
class CRATEAlphaCLIPAConfig:
    """Configuration of CRATE-α-CLIPA (defaults: the published L/14; see the registry presets).

    Attributes:
        image_size, patch_size: input side and patch side in pixels (official 224, 14).
        vision_width, vision_depth, vision_heads: the image tower W, layers, heads (L: 1024, 24, 16;
            H: 1280, 32, 16, so head size 80).
        overcomplete_ratio, eta, lambd: CRATE-α's sparse coding block (official 4, 0.1, 0.1).
        context_length, vocab_size: text positions C and token ids (official 32, 32000).
        text_width, text_depth, text_heads: the text tower T, layers, heads (both published models:
            the "H" text tower, 1024, 24, 16).
        embed_dim: E, the shared image–text space (official 1024).
        fixed_logit_scale: the scale of the cosine logits in ``forward`` (official evaluation: 100);
            None uses the learned temperature, ``logit_scale.exp()``, as in training.
        reference: the attention's softmax and the ISTA einsums written out instead of the fast path.
    """

    image_size: int = 224
    patch_size: int = 14
    vision_width: int = 1024
    vision_depth: int = 24
    vision_heads: int = 16
    overcomplete_ratio: int = 4
    eta: float = 0.1
    lambd: float = 0.1
    context_length: int = 32
    vocab_size: int = 32000
    text_width: int = 1024
    text_depth: int = 24
    text_heads: int = 16
    embed_dim: int = 1024
    fixed_logit_scale: float | None = 100.0
    reference: bool = False

    def __post_init__(self):
        image = ("image_size", "patch_size", "vision_width", "vision_depth", "vision_heads")
        text = ("context_length", "vocab_size", "text_width", "text_depth", "text_heads")
        base.check_model_sizes(self, image + ("overcomplete_ratio",) + text + ("embed_dim",))
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size {self.image_size} is not divisible by patch_size {self.patch_size}; "
                f"choose patch_size in {_divisors(self.image_size)}"
            )
        for tower in ("vision", "text"):
            width, heads = getattr(self, f"{tower}_width"), getattr(self, f"{tower}_heads")
            if width % heads:
                raise ValueError(
                    f"{tower}_width {width} is not divisible by {tower}_heads {heads}; choose "
                    f"{tower}_heads in {_divisors(width)}"
                )
        base.check_ista(self.eta, self.lambd)
        if self.fixed_logit_scale is not None:
            base.check_float("fixed_logit_scale", self.fixed_logit_scale, 0.0, math.inf)
            if not self.fixed_logit_scale > 0:
                raise ValueError(
                    f"fixed_logit_scale must be positive (official: 100), or None to use logit_scale.exp(); "
                    f"got {self.fixed_logit_scale!r}"
                )
        base.check_flag("reference", self.reference)

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def depth(self) -> int:
        """The image tower's depth (what the attention-map tools of ``crate_edu.evaluation`` read)."""
        return self.vision_depth


class CRATEAlphaCLIPA(nn.Module):
    """CRATE-α-CLIPA: ``CRATEAlphaCLIPA(CRATEAlphaCLIPAConfig(...))`` or ``CRATEAlphaCLIPA(**fields)``.

    - ``encode_image(images)`` -> image features (B, E), as officially (not normalised);
    - ``encode_text(tokens)`` -> text features (B, E), as officially (not normalised);
    - ``forward(images, tokens)`` -> (logits per image (B_img, B_text), logits per text, its
      transpose): scaled cosine similarities, normalised with the official + 1e-8.
    """

    kernel_parameters = ("text_projection",)  # the official text head, a Dense kernel (weight decay)

    def __init__(self, config: CRATEAlphaCLIPAConfig | None = None, **kwargs):
        super().__init__()
        cfg = config if config is not None else CRATEAlphaCLIPAConfig(**kwargs)
        self.config = cfg
        width = cfg.text_width
        # parameters in the official order, so that state_dict() lists keys as the files do
        self.positional_embedding = nn.Parameter(torch.empty(cfg.context_length, width))  # (C, T)
        # declared (E, T), the shape its use x @ text_projection.T implies (officially (T, E))
        self.text_projection = nn.Parameter(torch.empty(cfg.embed_dim, width))  # (E, T)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))  # learned temperature, log
        self.visual = ImageTower(cfg)
        self.transformer = ResidualStack(
            [
                ResidualAttentionBlock(
                    width, cfg.text_heads, text_mlp(width), attn_bias=True, reference=cfg.reference
                )
                for _ in range(cfg.text_depth)
            ]
        )
        self.token_embedding = nn.Embedding(cfg.vocab_size, width)
        self.ln_final = nn.LayerNorm(width, eps=LN_EPS)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise a fresh model (the official code leaves ``positional_embedding`` and
        ``text_projection`` as uninitialised memory and draws the image embeddings from N(0, 1)).

        As OpenAI CLIP and the JAX training code: token embeddings N(0, 0.02²), text positions
        N(0, 0.01²); in each text layer, q/k/v N(0, T^-1), the output maps N(0, T^-1 (2L)^-1) and
        the MLP's first map N(0, (2T)^-1); ``text_projection`` N(0, T^-1). The image tower's
        [CLS], positions and ``proj`` are N(0, W^-1) (OpenAI CLIP's ``scale = W ** -0.5``, which the
        official code computes and does not use); its convolution, attention and dictionaries keep
        their PyTorch / CRATE-α initialisation (``kaiming_uniform_`` for D and D1, as officially).
        """
        cfg, visual = self.config, self.visual
        with torch.no_grad():
            nn.init.normal_(self.token_embedding.weight, std=0.02)
            nn.init.normal_(self.positional_embedding, std=0.01)
            attn_std = cfg.text_width**-0.5
            proj_std = attn_std * (2 * cfg.text_depth) ** -0.5
            for block in self.transformer.resblocks:
                nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
                nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
                nn.init.normal_(block.mlp.c_fc.weight, std=(2 * cfg.text_width) ** -0.5)
                nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
            nn.init.normal_(self.text_projection, std=attn_std)
            for p in (visual.class_embedding, visual.positional_embedding, visual.proj):
                nn.init.normal_(p, std=cfg.vision_width**-0.5)
            self.logit_scale.fill_(math.log(1 / 0.07))

    def encode_image(self, images: Tensor) -> Tensor:
        """Images (B, 3, H, W), normalised with the ImageNet mean and std -> features (B, E)."""
        base.check_images(images, 3, self.config.image_size, "encode_image", like=self.visual.class_embedding)
        return self.visual(images)  # (B, E)

    def encode_text(self, tokens: Tensor) -> Tensor:
        """Token ids (B, C) -> text features (B, E).

        Pools the last position, C − 1, whatever it holds (officially usually padding, id 0): with
        no causal and no padding mask, every position has attended to every other. Departure from
        CLIP, which pools the end-of-text token under a causal mask.
        """
        self.check_tokens(tokens)
        x = self.token_embedding(tokens) + self.positional_embedding  # X^1                   (B, C, T)
        x = self.transformer(x)  # no mask                                                     (B, C, T)
        x = self.ln_final(x[:, -1])  # LN of the last position (LN acts per token)            (B, T)
        return x @ self.text_projection.T  # f_text, text_projection used transposed         (B, E)

    def forward_intermediates(self, images: Tensor) -> tuple[Tensor, list[base.LayerTrace]]:
        """Image features (B, E) and the image tower's per-layer traces (attention maps, codes),
        the interface ``crate_edu.evaluation``'s segmentation tools read."""
        base.check_images(
            images, 3, self.config.image_size, "forward_intermediates", like=self.visual.class_embedding
        )
        return self.visual.forward_trace(images)

    def forward(self, images: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """(logits per image (B_img, B_text), logits per text (B_text, B_img)).

        scale · cos(f_img, f_text), each feature divided by its norm + 1e-8 (as the official
        evaluation); scale = ``config.fixed_logit_scale`` (official 100) or ``logit_scale.exp()``.
        """
        img = normalize(self.encode_image(images))  # (B_img, E)
        text = normalize(self.encode_text(tokens))  # (B_text, E)
        cfg = self.config
        scale = self.logit_scale.exp() if cfg.fixed_logit_scale is None else cfg.fixed_logit_scale
        logits_per_image = scale * img @ text.T  # (B_img, B_text)
        return logits_per_image, logits_per_image.T

    def check_tokens(self, tokens: Tensor) -> None:
        """One-line errors unless ``tokens`` is an integer tensor (B, context_length) of valid ids."""
        cfg = self.config
        if not isinstance(tokens, Tensor):
            raise TypeError(
                f"encode_text expects a torch.Tensor of token ids (B, C), got {type(tokens).__name__}"
            )
        if tokens.is_floating_point() or tokens.is_complex() or tokens.dtype == torch.bool:
            raise TypeError(
                f"encode_text expects integer token ids, got dtype {tokens.dtype}; use tokens.long()"
            )
        if tokens.ndim != 2 or tokens.shape[1] != cfg.context_length:
            raise ValueError(
                f"encode_text expects token ids of shape (B, {cfg.context_length}), got "
                f"{tuple(tokens.shape)}; pad or truncate to the context length as the tokenizer does"
            )
        if (
            tokens.numel()
            and not tokens.is_meta
            and (int(tokens.min()) < 0 or int(tokens.max()) >= cfg.vocab_size)
        ):
            raise ValueError(
                f"token ids must be in [0, {cfg.vocab_size}), got values in "
                f"[{int(tokens.min())}, {int(tokens.max())}]; use the model's tokenizer"
            )

    def num_params(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)


def _divisors(n: int) -> list[int]:
    return [k for k in range(1, n + 1) if n % k == 0]


def normalize(features: Tensor) -> Tensor:
    """features / (‖features‖ + 1e-8), row by row, as the official evaluation normalises."""
    return features / (features.norm(dim=-1, keepdim=True) + 1e-8)
