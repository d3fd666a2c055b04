"""CRATE-MAE (arXiv 2404.02446): a masked autoencoder whose decoder inverts the CRATE encoder.

Read it top to bottom: patches and masking, the patch embedding, the decoder's blocks
(:class:`LinearDictionary`, :class:`CRATEDecoderLayer`), the model. The encoder's layers are
CRATE's own (``crate.py``). Faithful to the official ``model/crate_ae/crate_ae.py`` (names,
initialisation, arithmetic):

- patches are embedded by a Conv2d (``patch_embed.proj``); fixed 2-D sin-cos positions;
- masking happens by argsort of uniform noise (0 = keep, 1 = remove), but the learned
  ``mask_token`` is put back **before the encoder**: the encoder sees all N + 1 tokens, the
  masked ones replaced, with ``decoder_pos_embed`` added (that is what the official code adds;
  ``pos_embed`` holds the same sin-cos table and is unused);
- encoder layers are CRATE layers with λ = 0.5; then ``norm`` (LayerNorm eps 1e-6);
- decoder layers invert the encoder layer by layer (``CRATEDecoderLayer``); then
  ``decoder_norm`` and ``decoder_pred`` (a Linear to P²·C pixels); the [CLS] token is dropped;
- loss: per-patch mean squared error, averaged over masked patches only.

``decoder_embed`` exists in the official model but is never used; it is kept so that official
checkpoints load. ``num_classes > 0`` adds a linear-probe head on the pooled encoder features
(``classify``), which is not part of the official model.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from crate_edu.models import base
from crate_edu.models.crate import MSSA, CRATELayer

__all__ = [
    "CRATEMAEConfig",
    "CRATEMAE",
    "LinearDictionary",
    "CRATEDecoderLayer",
    "sincos_pos_embed_2d",
    "patchify",
    "unpatchify",
    "random_masking",
]


def sincos_pos_embed_2d(dim: int, grid_size: int, cls_token: bool = True) -> Tensor:
    """Fixed 2-D sine-cosine positions, (grid_size², dim) or (1 + grid_size², dim) with a zero [CLS] row.

    Half the channels encode the column index, half the row index; each half is
    [sin(pos·ω_k), cos(pos·ω_k)] with ω_k = 10000^(−k / (dim/4)), k = 0 … dim/4 − 1.
    Computed in float32 as the MAE reference does.
    """
    omega = np.arange(dim // 4, dtype=np.float32)
    omega /= dim / 4.0
    omega = 1.0 / 10000**omega  # (dim/4,)
    # gw[i, j] = j (column), gh[i, j] = i (row) for the patch in raster position i·grid + j. As in
    # the MAE reference, the first half of the channels encodes the column, the second the row.
    gw, gh = np.meshgrid(np.arange(grid_size, dtype=np.float32), np.arange(grid_size, dtype=np.float32))

    def encode(pos: np.ndarray) -> np.ndarray:
        out = np.einsum("m,d->md", pos.reshape(-1), omega)  # (M, dim/4)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)  # (M, dim/2)

    emb = np.concatenate([encode(gw), encode(gh)], axis=1)  # (M, dim)
    if cls_token:
        emb = np.concatenate([np.zeros([1, dim]), emb], axis=0)
    return torch.from_numpy(emb).float()


def patchify(imgs: Tensor, patch_size: int) -> Tensor:
    """(B, C, H, W) -> (B, L, p²·C), patch pixels in (p, q, c) order, as the MAE reference."""
    return rearrange(imgs, "b c (h p) (w q) -> b (h w) (p q c)", p=patch_size, q=patch_size)


def unpatchify(x: Tensor, patch_size: int, channels: int = 3) -> Tensor:
    """(B, L, p²·C) -> (B, C, H, W), the inverse of ``patchify`` for a square grid."""
    h = int(round(x.shape[1] ** 0.5))
    if h * h != x.shape[1]:
        raise ValueError(f"unpatchify needs a square number of patches, got {x.shape[1]}")
    return rearrange(x, "b (h w) (p q c) -> b c (h p) (w q)", h=h, p=patch_size, q=patch_size, c=channels)


def random_masking(x: Tensor, mask_ratio: float, noise: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Keep the ``int(L · (1 − mask_ratio))`` tokens with the smallest noise.

    Args:
        x: (B, L, d) patch tokens.
        noise: (B, L) values whose per-row argsort decides the masking (small = keep).
    Returns:
        kept tokens (B, L_keep, d), mask (B, L) with 0 = keep and 1 = remove, and
        ``ids_restore`` (B, L) that undoes the shuffle.
    """
    B, L, D = x.shape
    len_keep = int(L * (1 - mask_ratio))
    ids_shuffle = torch.argsort(noise, dim=1)  # ascending: small is keep, large is remove
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    ids_keep = ids_shuffle[:, :len_keep]
    x_kept = torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(-1, -1, D))  # (B, L_keep, d)
    mask = torch.ones(B, L, device=x.device, dtype=x.dtype)
    mask[:, :len_keep] = 0
    mask = torch.gather(mask, 1, ids_restore)  # back to patch order
    return x_kept, mask, ids_restore


class PatchEmbed(nn.Module):
    """Conv2d patch embedding under the timm name ``proj``: (B, C, H, W) -> (B, L, d)."""

    def __init__(self, patch_size: int, channels: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(channels, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        return rearrange(self.proj(x), "b d h w -> b (h w) d")


class LinearDictionary(nn.Module):
    """The CRATE-MAE decoder's square linear map D̃ (no bias): x -> D̃ x, tokens as rows."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(dim, dim))
        with torch.no_grad():
            nn.init.kaiming_uniform_(self.weight)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight)  # D̃ x                                                (B, N, d)


class CRATEDecoderLayer(base.Block, nn.ModuleList):
    """One CRATE-MAE decoder layer, the inverse of encoder layer L + 1 − ℓ (docs/design.md)::

        Z̃^{ℓ+½} = D̃ LN(Z̃^ℓ)                        # undoes ISTA's sparsification (linear map)
        Z̃^{ℓ+1} = Z̃^{ℓ+½} − MSSA(LN(Z̃^{ℓ+½}))        # undoes the compression step

    Official attribute order: the linear map first (``0``), then MSSA (``1``).
    """

    def __init__(self, dim: int, heads: int, dim_head: int, dropout: float = 0.0, reference: bool = False):
        super().__init__(
            [
                base.PreNorm(dim, LinearDictionary(dim)),
                base.PreNorm(dim, MSSA(dim, heads, dim_head, dropout, out_bias=True, reference=reference)),
            ]
        )

    @property
    def mssa(self) -> MSSA:
        return self[1].fn

    def forward(self, x: Tensor, return_trace: bool = False) -> Tensor | tuple[Tensor, base.LayerTrace]:
        """Z̃^ℓ (B, N, d) -> Z̃^{ℓ+1} (B, N, d); ``return_trace=True`` is :meth:`forward_trace`."""
        if return_trace:
            return self.forward_trace(x)
        z_half = self[0](x)  # Z̃^{ℓ+½} = D̃ LN(Z̃^ℓ)                                         (B, N, d)
        return z_half - self[1](z_half)  # Z̃^{ℓ+1} = Z̃^{ℓ+½} − MSSA(LN(Z̃^{ℓ+½}))              (B, N, d)

    def forward_trace(self, x: Tensor) -> tuple[Tensor, base.LayerTrace]:
        """Z̃^{ℓ+1} and what the layer computed (:class:`LayerTrace`, no codes)."""
        z_half = self[0](x)
        parts: base.AttentionParts = self.mssa.forward_parts(self[1].norm(z_half))
        z_out = z_half - parts.out
        return z_out, base.LayerTrace(proj=parts.proj, attn=parts.attn, z_half=z_half, z_out=z_out)


@dataclass(frozen=True)
class CRATEMAEConfig:
    """Configuration of CRATE-MAE (official defaults: CRATE-MAE-Base, 224 px, patch 16)."""

    image_size: int = 224
    patch_size: int = 16
    channels: int = 3
    dim: int = 768  # encoder and decoder width (equal, as officially)
    depth: int = 12
    heads: int = 12
    dim_head: int | None = None
    decoder_depth: int = 12
    decoder_heads: int = 12
    eta: float = 0.1  # encoder ISTA step size
    lambd: float = 0.5  # encoder ISTA sparsity penalty (0.5 in CRATE-MAE)
    mask_ratio: float = 0.75  # default for forward()
    norm_pix_loss: bool = False
    num_classes: int = 0  # > 0 adds a linear-probe head (not official)
    pool: str = "cls"  # pooling for classify()/forward_head()
    dropout: float = 0.0
    reference: bool = False  # the official arithmetic, written out, instead of the fast path

    def __new__(cls, *args, **kwargs):
        base.check_renamed(cls.__name__, kwargs)
        return super().__new__(cls)

    def __post_init__(self):
        if isinstance(self.image_size, (tuple, list)) or isinstance(self.patch_size, (tuple, list)):
            raise ValueError(
                "CRATE-MAE uses square images and patches: pass image_size and patch_size as ints"
            )
        base.check_geometry(self.image_size, self.patch_size, self.dim, self.heads, self.dim_head, self.pool)
        base.check_positive_int("decoder_heads", self.decoder_heads)
        base.check_geometry(
            self.image_size, self.patch_size, self.dim, self.decoder_heads, self.dim_head, self.pool
        )
        base.check_model_sizes(self, ("depth", "decoder_depth", "channels"))
        base.check_positive_int("num_classes", self.num_classes, minimum=0)
        if self.dim % 4:
            raise ValueError(f"dim must be divisible by 4 for the 2-D sin-cos positions, got {self.dim}")
        base.check_float("mask_ratio", self.mask_ratio, 0.0, 1.0)
        base.check_float("dropout", self.dropout, 0.0, 1.0)
        base.check_ista(self.eta, self.lambd)
        base.check_flag("reference", self.reference)

    @property
    def head_dim(self) -> int:
        return self.dim_head if self.dim_head is not None else self.dim // self.heads

    @property
    def decoder_head_dim(self) -> int:
        return self.dim_head if self.dim_head is not None else self.dim // self.decoder_heads

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size**2


class CRATEMAE(nn.Module):
    """CRATE-MAE. ``model(imgs, mask_ratio=0.75, noise=None) -> (loss, pred, mask)``.

    ``pred`` is (B, L, p²·C) in patch order (see ``patchify``); ``mask`` is (B, L), 1 = removed.
    """

    def __init__(self, config: CRATEMAEConfig | None = None, **kwargs):
        super().__init__()
        cfg = config if config is not None else CRATEMAEConfig(**kwargs)
        self.config = cfg
        dim, n = cfg.dim, cfg.num_patches
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.channels, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, n + 1, dim), requires_grad=False)  # fixed sin-cos
        self.blocks = nn.ModuleList(
            [
                base.Transformer(
                    [CRATELayer(dim, cfg.heads, cfg.head_dim, cfg.dropout, cfg.eta, cfg.lambd, cfg.reference)]
                )
                for _ in range(cfg.depth)
            ]
        )
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.decoder_embed = nn.Linear(dim, dim)  # unused, as officially
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, n + 1, dim), requires_grad=False)
        self.decoder_blocks = nn.ModuleList(
            [
                base.Transformer(
                    [
                        CRATEDecoderLayer(
                            dim, cfg.decoder_heads, cfg.decoder_head_dim, cfg.dropout, cfg.reference
                        )
                    ]
                )
                for _ in range(cfg.decoder_depth)
            ]
        )
        self.decoder_norm = nn.LayerNorm(dim, eps=1e-6)
        self.decoder_pred = nn.Linear(dim, cfg.patch_size**2 * cfg.channels)
        self._init_weights()
        if cfg.num_classes > 0:
            self.head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, cfg.num_classes))

    def _init_weights(self) -> None:
        """The official initialisation (MAE's): sin-cos positions, xavier Linear/Conv, N(0, 0.02) tokens."""
        table = sincos_pos_embed_2d(self.config.dim, self.config.grid_size, cls_token=True)
        self.pos_embed.data.copy_(table.unsqueeze(0))
        self.decoder_pos_embed.data.copy_(table.unsqueeze(0))
        w = self.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    # ----------------------------------------------------------------------------------- helpers
    def patchify(self, imgs: Tensor) -> Tensor:
        return patchify(imgs, self.config.patch_size)

    def unpatchify(self, x: Tensor) -> Tensor:
        return unpatchify(x, self.config.patch_size, self.config.channels)

    def _check(self, imgs: Tensor, noise: Tensor | None, mask_ratio: float) -> None:
        cfg = self.config
        base.check_images(imgs, cfg.channels, cfg.image_size, type(self).__name__, like=self.cls_token)
        base.check_float("mask_ratio", mask_ratio, 0.0, 1.0)
        if noise is not None and tuple(noise.shape) != (imgs.shape[0], cfg.num_patches):
            raise ValueError(
                f"noise must have shape (B, L) = ({imgs.shape[0]}, {cfg.num_patches}) (one value per patch), "
                f"got {tuple(noise.shape)}"
            )

    # ----------------------------------------------------------------------------------- encoder
    def encoder_input(self, imgs: Tensor, mask_ratio: float, noise: Tensor | None) -> tuple[Tensor, Tensor]:
        """Tokens the encoder sees (B, L + 1, d), masked patches replaced by ``mask_token``; and the mask."""
        self._check(imgs, noise, mask_ratio)
        x = self.patch_embed(imgs)  # (B, L, d)
        B, L, D = x.shape
        if noise is None:
            noise = torch.rand(B, L, device=x.device)
        x_kept, mask, ids_restore = random_masking(x, mask_ratio, noise.to(x.device))
        mask_tokens = self.mask_token.expand(B, L - x_kept.shape[1], D).to(x.dtype)
        x = torch.cat([x_kept, mask_tokens], dim=1)  # (B, L, d), shuffled order
        x = torch.gather(x, 1, ids_restore.unsqueeze(-1).expand(-1, -1, D))  # unshuffle
        x = torch.cat([self.cls_token.expand(B, -1, -1), x], dim=1)  # (B, L + 1, d)
        return x + self.decoder_pos_embed, mask  # the official encoder adds decoder_pos_embed

    def forward_encoder(self, imgs: Tensor, mask_ratio: float = 0.75, noise: Tensor | None = None):
        """Returns latent (B, L + 1, d) after ``norm``, and mask (B, L)."""
        x, mask = self.encoder_input(imgs, mask_ratio, noise)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x), mask

    def forward_decoder(self, latent: Tensor) -> Tensor:
        """latent (B, L + 1, d) -> pixel predictions (B, L, p²·C), [CLS] dropped."""
        x = latent
        for blk in self.decoder_blocks:
            x = blk(x)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:, :]

    def forward_loss(self, imgs: Tensor, pred: Tensor, mask: Tensor) -> Tensor:
        """Mean squared error per patch, averaged over the removed patches (mask == 1)."""
        target = self.patchify(imgs)
        if self.config.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1.0e-6) ** 0.5
        loss = ((pred - target) ** 2).mean(dim=-1)  # (B, L)
        return (loss * mask).sum() / mask.sum()

    def _check_loss(self, imgs: Tensor, mask_ratio: float) -> None:
        """The loss averages over the removed patches: there must be some."""
        if isinstance(imgs, Tensor) and imgs.ndim == 4 and imgs.shape[0] == 0:
            raise ValueError(
                f"{type(self).__name__} got an empty batch (shape {tuple(imgs.shape)}): its loss is a mean "
                "over masked patches, and there are none; pass at least one image (forward_features "
                "and classify accept an empty batch)"
            )
        if int(self.config.num_patches * (1 - mask_ratio)) == self.config.num_patches:
            raise ValueError(
                f"mask_ratio {mask_ratio} removes none of the {self.config.num_patches} patches, so the "
                "loss (a mean over removed patches) is undefined; use a larger mask_ratio, or "
                "forward_features for the unmasked encoding"
            )

    def forward(self, imgs: Tensor, mask_ratio: float | None = None, noise: Tensor | None = None):
        """Returns (loss, pred (B, L, p²·C), mask (B, L)); ``noise`` (B, L) decides the masking if given."""
        mask_ratio = self.config.mask_ratio if mask_ratio is None else mask_ratio
        self._check_loss(imgs, mask_ratio)
        latent, mask = self.forward_encoder(imgs, mask_ratio, noise)
        pred = self.forward_decoder(latent)
        return self.forward_loss(imgs, pred, mask), pred, mask

    def forward_intermediates(
        self, imgs: Tensor, mask_ratio: float | None = None, noise: Tensor | None = None
    ):
        """Like ``forward``, plus {'encoder': [LayerTrace], 'decoder': [LayerTrace]} (no hooks needed)."""
        mask_ratio = self.config.mask_ratio if mask_ratio is None else mask_ratio
        x, mask = self.encoder_input(imgs, mask_ratio, noise)
        enc: list[base.LayerTrace] = []
        for blk in self.blocks:
            x, (trace,) = blk.forward_trace(x)
            enc.append(trace)
        x = self.norm(x)
        dec: list[base.LayerTrace] = []
        for blk in self.decoder_blocks:
            x, (trace,) = blk.forward_trace(x)
            dec.append(trace)
        pred = self.decoder_pred(self.decoder_norm(x))[:, 1:, :]
        return (self.forward_loss(imgs, pred, mask), pred, mask), {"encoder": enc, "decoder": dec}

    # ----------------------------------------------------------------------- features and probing
    def forward_features(self, imgs: Tensor) -> Tensor:
        """Encoder features of the whole, unmasked image: (B, L + 1, d)."""
        return self.forward_encoder(imgs, mask_ratio=0.0, noise=None)[0]

    def forward_head(self, tokens: Tensor, pre_logits: bool = False) -> Tensor:
        x = tokens.mean(dim=1) if self.config.pool == "mean" else tokens[:, 0]
        if pre_logits:
            return x
        if not hasattr(self, "head"):
            raise RuntimeError(
                "this CRATE-MAE has no classification head; create it with num_classes=K "
                "(e.g. create_model('crate_mae_tiny', num_classes=10)) or call reset_classifier(K)"
            )
        return self.head(x)

    def classify(self, imgs: Tensor) -> Tensor:
        """Logits (B, num_classes) from the pooled encoder features (linear probe / fine-tuning)."""
        return self.forward_head(self.forward_features(imgs))

    def reset_classifier(self, num_classes: int) -> None:
        dim = self.config.dim
        ref = self.norm.weight
        self.head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, num_classes)).to(ref.device, ref.dtype)
        self.config = replace(self.config, num_classes=num_classes)

    def num_params(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)
