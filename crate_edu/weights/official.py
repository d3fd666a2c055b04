"""Official CRATE, CRATE-α, CRATE-MAE and CRATE-LM checkpoints: where they live, and loading,
checking and downloading them.

The models in ``crate_edu.models`` use the official parameter names (docs/design.md), so an
official state dict loads with ``model.load_state_dict`` unchanged. This module adds what stands
between a file on disk and that call:

``load_official(name, path)``
    Reads the file without unpickling arbitrary objects (``crate_edu.weights.files``), infers
    ``num_classes``, ``patch_size`` and ``image_size`` from the tensor shapes (so a fine-tuned
    CIFAR-10 CRATE-S loads), checks every key and shape (``crate_edu.weights.structure``), and
    returns the model in ``eval()`` mode.
``verify_checkpoint(name, path)``
    The same structural check, plus the file's sha256, as a report dict (for ``crate-edu fetch``).
``list_official()`` / ``download_official(key)``
    A small registry of where the published weights live (Google Drive, the Hugging Face hub),
    and a download into the cache (``$CRATE_EDU_CACHE`` or ``~/.cache/crate_edu/weights``) that
    checks the file before moving it into place (``crate_edu.weights.download``).

Errors say what is wrong and what to do: ``CheckpointError`` (a ``ValueError``) for a file that is
not the expected checkpoint, ``WeightsUnavailableError`` when the weights cannot be downloaded
(offline, dead link, never published); its message gives the URL and the exact cache path to put
a hand-downloaded copy at.

Example::

    import crate_edu
    model = crate_edu.load_official("crate_small", "CRATE_small.pth")   # any local copy
    path = crate_edu.download_official("crate_alpha_b16_in1k")          # needs the internet
    model = crate_edu.load_official("crate_alpha_b16_in21k", path21k)   # 19,167-way head
    lm = crate_edu.load_official("crate_lm_12l_pile", "ckpt-crate-12l-overparam-600000.pt")

The CRATE-LM file is the official train.py's raw checkpoint (model, optimizer, model_args, ...):
read with ``weights_only=True``, its ``'model'`` entry taken and the ``_orig_mod.`` prefix of
``torch.compile`` stripped (``crate_edu.weights.reader``); its vocabulary and context sizes are
read from the embeddings, so a file with GPT-2's unpadded 50257 ids loads as well.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from crate_edu.models import create_model, list_models, model_spec
from crate_edu.weights.download import (
    WeightsUnavailableError,
    default_cache_dir,
    download_verified,
    fetch_from_drive,
    fetch_from_hub,
)
from crate_edu.weights.reader import CheckpointError, read_state_dict, sha256sum
from crate_edu.weights.structure import (
    StructureReport,
    check_structure,
    compare_structure,
    detect_family,
    expected_shapes,
    infer_overrides,
)

__all__ = [
    "OFFICIAL_WEIGHTS",
    "OfficialWeights",
    "cache_path",
    "download_official",
    "get_official",
    "list_official",
    "load_official",
    "verify_checkpoint",
]

PathLike = str | os.PathLike


# --------------------------------------------------------------------------------------------------
# Where the published weights live. Checksums are not published upstream: ``sha256`` stays None
# until someone records the hash of a verified download (``verify_checkpoint`` prints it).
# --------------------------------------------------------------------------------------------------

_GDRIVE_URL = "https://drive.google.com/file/d/{id}/view"
_HF_URL = "https://huggingface.co/{repo}/blob/main/{filename}"


@dataclass(frozen=True)
class OfficialWeights:
    """One published checkpoint and where it lives.

    Attributes:
        key: registry key, e.g. ``"crate_alpha_b16_in1k"``.
        model: the ``crate_edu`` model name the file loads into, or None when this package has no
            model with the file's structure.
        source: ``"gdrive"``, ``"hf"`` or None (never published).
        file_id: Google Drive file id (``source == "gdrive"``).
        repo_id: Hugging Face hub repository (``source == "hf"``).
        filename: file path inside the hub repository (``source == "hf"``).
        top1: the reported accuracy in percent (see ``metric``), or None.
        metric: what ``top1`` measures.
        sha256: hex digest of the published file; None where nobody has recorded it yet.
        overrides: ``create_model`` overrides the file was trained with (empty for the presets).
        notes: caveats (dead links, what the file contains).
    """

    key: str
    model: str | None
    source: str | None
    file_id: str | None = None
    repo_id: str | None = None
    filename: str | None = None
    top1: float | None = None
    metric: str = ""
    sha256: str | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)
    notes: str = ""

    @property
    def url(self) -> str | None:
        """A page a person can open in a browser to download the file (None if unpublished)."""
        if self.source == "gdrive":
            return _GDRIVE_URL.format(id=self.file_id)
        if self.source == "hf":
            return _HF_URL.format(repo=self.repo_id, filename=self.filename)
        return None

    @property
    def cache_name(self) -> str:
        """The file name used in the cache directory: ``<key>.pth``."""
        suffix = Path(self.filename).suffix if self.filename else ".pth"
        return f"{self.key}{suffix or '.pth'}"

    @property
    def loadable(self) -> bool:
        """Whether ``load_official`` can build a model for this file."""
        return self.model is not None and self.source is not None


_IN1K = "ImageNet-1K top-1 (%)"
_IN21K = "ImageNet-21K pre-training, 19,167 classes (fine-tune with --recipe in1k-finetune)"
#: ``torch/in21k_Pretrain/`` of the hub repository (docs/notes/crate_alpha_official_code.md §4.2):
#: (model size and patch, file name); some names have no extension.
_IN21K_FILES = (
    ("B16", "crate_alpha_B16_IN21K"),
    ("B32", "crate_alpha_B32_in21k.pth"),
    ("B8", "crate_alpha_B8_IN21K"),
    ("L14", "crate_alpha_L14_IN21K"),
    ("L32", "crate_alpha_L32_in21k.pth"),
    ("L8", "crate_alpha_L8_IN21K"),
)
_HF_REPO = "UCSC-VLAA/CRATE-alpha"

OFFICIAL_WEIGHTS: dict[str, OfficialWeights] = {
    w.key: w
    for w in [
        OfficialWeights(
            "crate_tiny_in1k",
            "crate_tiny",
            None,
            top1=66.7,
            metric=_IN1K,
            notes="never published by the authors; train it yourself (notebooks/) or use crate_small",
        ),
        OfficialWeights(
            "crate_small_in1k",
            "crate_small",
            "gdrive",
            file_id="1hYgDJl4EKHYfKprwhEjmWmWHuxnK6_h8",
            top1=69.2,
            metric=_IN1K,
            notes="the Drive link is reported dead since April 2025 (official CRATE repo, issue #30); "
            "if you have a copy, load it with crate_edu.load_official('crate_small', path)",
        ),
        OfficialWeights(
            "crate_base_in1k",
            "crate_base",
            None,
            top1=70.8,
            metric=_IN1K,
            notes="never published by the authors",
        ),
        OfficialWeights(
            "crate_large_in1k",
            "crate_large",
            None,
            top1=71.3,
            metric=_IN1K,
            notes="never published by the authors",
        ),
        OfficialWeights(
            "crate_mae_base_in1k",
            "crate_mae_base",
            "gdrive",
            file_id="11i5BMwymqOsunq44WD3omN5mS6ZREQPO",
            metric="masked-autoencoder pre-training (no classification head)",
            notes="CRATE-MAE-Base encoder + decoder; the MAE codebase may wrap it as {'model': ...}",
        ),
        OfficialWeights(
            "crate_alpha_b16_in1k",
            "crate_alpha_b16",
            "hf",
            repo_id=_HF_REPO,
            filename="torch/crate_alpha_B16.pth",
            top1=81.2,
            metric="ImageNet-1K top-1 (%), ImageNet-21K pre-training + ImageNet-1K fine-tuning",
            notes="plain state dict from the official torch_inference code",
        ),
        OfficialWeights(
            "crate_alpha_l14_in1k",
            "crate_alpha_l14",
            "hf",
            repo_id=_HF_REPO,
            filename="torch/crate_alpha_L14.pth",
            top1=83.9,
            metric="ImageNet-1K top-1 (%), ImageNet-21K pre-training + ImageNet-1K fine-tuning",
            notes="plain state dict from the official torch_inference code",
        ),
        *[
            OfficialWeights(
                f"crate_alpha_{size.lower()}_in21k",
                f"crate_alpha_{size[0].lower()}{16 if size[0] == 'B' else 14}",
                "hf",
                repo_id=_HF_REPO,
                filename=f"torch/in21k_Pretrain/{filename}",
                metric=_IN21K,
                overrides={"num_classes": 19167, "patch_size": int(size[1:])},
                notes="ImageNet-21K pre-training (the official recipe, crate-edu train --recipe "
                "in21k-pretrain); no accuracy published; the layout (the crate_alpha.py classifier with a "
                "19,167-way head) is inferred from the file size, the file has not been loaded here"
                + ("; the file name has no extension on the hub" if "." not in filename else ""),
            )
            for size, filename in _IN21K_FILES
        ],
        OfficialWeights(
            "crate_lm_12l_pile",
            "crate_lm_12l",
            "hf",
            repo_id="JackBAI/CRATE-GPT-12L-Pile-600000steps",
            filename="ckpt-crate-12l-overparam-600000.pt",
            metric="next-token prediction on the uncopyrighted Pile, GPT-2 BPE ids (no score published "
            "with the file)",
            notes="the official train.py's raw torch.save dict (model, optimizer, model_args, iter_num, "
            "best_val_loss, config), about 983 MB with the AdamW state; the model's keys likely carry "
            "torch.compile's '_orig_mod.' prefix, stripped on loading; layout inferred from the official "
            "code (docs/notes/crate_lm_official_code.md section 7), the file has not been loaded here",
        ),
        OfficialWeights(
            "crate_alpha_clipa_l14",
            "crate_alpha_clipa_l14",
            "hf",
            repo_id=_HF_REPO,
            filename="torch/crate_alpha_CLIPA_L14.pth",
            top1=69.8,
            metric="ImageNet-1K zero-shot top-1 (%)",
            notes="CLIPA image-text model (CRATE-α image tower, transformer text tower); plain state dict "
            "from the official torch_inference code, LayerNorms with biases (inferred from its Flax origin)",
        ),
        OfficialWeights(
            "crate_alpha_clipa_h14",
            "crate_alpha_clipa_h14",
            "hf",
            repo_id=_HF_REPO,
            filename="torch/crate_alpha_CLIPA_H14.pth",
            top1=72.3,
            metric="ImageNet-1K zero-shot top-1 (%)",
            notes="CLIPA image-text model (CRATE-α image tower, transformer text tower); plain state dict "
            "from the official torch_inference code, LayerNorms with biases (inferred from its Flax origin)",
        ),
    ]
}


def list_official() -> list[OfficialWeights]:
    """Every registry entry (published or not), in registry order."""
    return list(OFFICIAL_WEIGHTS.values())


def get_official(key: str) -> OfficialWeights:
    """The registry entry for ``key``; a model name with exactly one entry is accepted too.

    Raises:
        ValueError: unknown key, with the list of known keys.
    """
    if key in OFFICIAL_WEIGHTS:
        return OFFICIAL_WEIGHTS[key]
    matches = _preset_entries(key)
    if len(matches) == 1:
        return matches[0]
    raise ValueError(
        f"no official weights named {key!r}; known keys: {', '.join(OFFICIAL_WEIGHTS)} "
        "(see crate_edu.list_official())"
    )


def _preset_entries(model: str) -> list[OfficialWeights]:
    """The entries of ``model`` itself: those of its preset shape (e.g. ``crate_alpha_b16``'s
    ImageNet-1K weights, not the ImageNet-21K ones with a 19,167-way head)."""
    return [w for w in OFFICIAL_WEIGHTS.values() if w.model == model and not w.overrides]


def cache_path(key: str, cache_dir: PathLike | None = None) -> Path:
    """Where ``download_official(key)`` keeps the file (and where to put a hand-downloaded copy)."""
    entry = get_official(key)
    base = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return base / entry.cache_name


def _resolve(name: str) -> tuple[str, dict[str, Any], OfficialWeights | None]:
    """(model name, base overrides, registry entry) for a model name or an official-weights key."""
    if name in OFFICIAL_WEIGHTS:
        entry = OFFICIAL_WEIGHTS[name]
        if entry.model is None:
            raise ValueError(f"{name!r} cannot be loaded by crate_edu: {entry.notes}")
        return entry.model, dict(entry.overrides), entry
    known = list_models()
    if name not in known:
        raise ValueError(
            f"unknown model {name!r}; choose one of {', '.join(known)} "
            f"or an official-weights key ({', '.join(OFFICIAL_WEIGHTS)})"
        )
    entries = _preset_entries(name)
    return name, {}, entries[0] if len(entries) == 1 else None


# --------------------------------------------------------------------------------------------------
# Loading and verifying.
# --------------------------------------------------------------------------------------------------


def load_official(
    name: str,
    path: PathLike | None = None,
    *,
    strict: bool = True,
    map_location: Any = "cpu",
    **overrides: Any,
) -> nn.Module:
    """Build ``name`` and load an official checkpoint into it; returns the model in ``eval()`` mode.

    Args:
        name: a model name (``crate_small``, ``crate_alpha_b16``, ``crate_alpha_clipa_l14``,
            ``crate_mae_base``, ``crate_lm_12l``, ...; see
            ``crate_edu.list_models()``) or an official-weights key (``crate_edu.list_official()``).
        path: the checkpoint file (``.pth``/``.pt``/``.safetensors``; official wrappers and the
            ``module.`` prefix are handled). None downloads the published file for ``name``
            (``download_official``), which needs the internet.
        strict: require every key to match. With ``strict=False`` missing and unexpected keys are
            reported as a warning; mismatched shapes are always an error.
        map_location: where tensors are loaded; a device string or ``torch.device`` also moves the
            model there.
        **overrides: extra ``create_model`` overrides that cannot be read from the weights (e.g.
            ``pool="mean"``); they win over the inferred ``num_classes``/``patch_size``/``image_size``,
            and so does the published shape of a registry key (``crate_alpha_b16_in21k``: 19,167
            classes), so that a file of another shape is refused under that key.

    Returns:
        The model, in eval mode, with the file's weights.

    Raises:
        CheckpointError: the file is unreadable or does not fit (the message names the missing and
            unexpected keys, the mismatched shapes, and what to do).
        WeightsUnavailableError: ``path`` is None and the download is impossible.
    """
    model_name, base, entry = _resolve(name)
    if path is None:
        if entry is None:
            raise ValueError(f"no published weights for {name!r}; pass the path of a checkpoint file")
        path = download_official(entry.key)
    path = Path(path).expanduser()
    state_dict = read_state_dict(path, map_location=map_location)
    inferred = infer_overrides(model_name, state_dict, **{**base, **overrides})
    final = {**inferred, **base, **overrides}  # a registry key's published shape wins over the file's
    report = check_structure(model_name, state_dict, path, final, strict)
    if not report.ok:
        warnings.warn(
            f"{path} loaded into {model_name!r} with strict=False:\n{report.describe()}", stacklevel=2
        )
    model = create_model(model_name, **final)
    model.load_state_dict(state_dict, strict=strict)
    if isinstance(map_location, str | torch.device):
        model = model.to(map_location)
    return model.eval()


def verify_checkpoint(name: str, path: PathLike) -> dict[str, Any]:
    """Check a file against a model or an official-weights entry, without building the model.

    For a registry key (``crate_edu.list_official()``) the file must have exactly the published
    structure (the preset with the entry's overrides) and, where one is recorded, its sha256. For a
    model name, ``num_classes``/``patch_size``/``image_size`` are inferred as ``load_official`` does.

    Returns:
        A dict: ``name``, ``model``, ``path``, ``ok``, ``error`` (None, or why the file could not be
        read or checked), ``family`` (detected from the keys), ``num_keys``, ``num_expected``,
        ``keys_ok``, ``shapes_ok``, ``missing``, ``unexpected``, ``mismatched`` (key → [expected,
        got]), ``overrides``, ``sha256``, ``sha256_expected``, ``sha256_ok`` (None when no hash is
        recorded).
    """
    path = Path(path).expanduser()
    entry = OFFICIAL_WEIGHTS.get(name)
    model_name = entry.model if entry is not None else _resolve(name)[0]
    report = _empty_report(name, model_name, path, entry)
    if not path.is_file():
        report["error"] = f"{path}: no such file"
        return report
    report["sha256"] = sha256sum(path)
    if report["sha256_expected"] is not None:
        report["sha256_ok"] = report["sha256"] == report["sha256_expected"].lower()
    if model_name is None:  # downloadable but not loadable here: only the sha256 is checked
        report["ok"] = report["sha256_ok"] is not False
        return report
    try:
        state_dict = read_state_dict(path, map_location="cpu")
    except CheckpointError as exc:
        report["error"] = str(exc)
        return report
    overrides = (
        _published_overrides(entry, state_dict)
        if entry is not None
        else infer_overrides(model_name, state_dict)
    )
    structure = compare_structure(expected_shapes(model_name, **overrides), state_dict)
    report.update(_structure_fields(structure, state_dict, overrides))
    report["ok"] = structure.ok and report["sha256_ok"] is not False
    return report


def _empty_report(
    name: str, model_name: str | None, path: Path, entry: OfficialWeights | None
) -> dict[str, Any]:
    """The report of :func:`verify_checkpoint` before anything is checked (nothing is ok yet)."""
    return {
        "name": name,
        "model": model_name,
        "path": str(path),
        "ok": False,
        "error": None,
        "family": None,
        "num_keys": 0,
        "num_expected": 0,
        "keys_ok": False,
        "shapes_ok": False,
        "missing": [],
        "unexpected": [],
        "mismatched": {},
        "overrides": {},
        "sha256": None,
        "sha256_expected": entry.sha256 if entry is not None else None,
        "sha256_ok": None,
    }


def _structure_fields(
    structure: StructureReport, state_dict: Mapping[str, Any], overrides: dict[str, Any]
) -> dict[str, Any]:
    """The report fields of :func:`verify_checkpoint` that the structural check fills in."""
    return {
        "error": None if structure.ok else structure.describe(sep="; "),
        "family": detect_family(state_dict),
        "num_keys": len(state_dict),
        "num_expected": structure.num_expected,
        "keys_ok": structure.keys_ok,
        "shapes_ok": structure.shapes_ok,
        "missing": structure.missing,
        "unexpected": structure.unexpected,
        "mismatched": {k: [list(e), list(g)] for k, (e, g) in structure.mismatched.items()},
        "overrides": overrides,
    }


# --------------------------------------------------------------------------------------------------
# Downloading.
# --------------------------------------------------------------------------------------------------


def download_official(key: str, cache_dir: PathLike | None = None, *, force: bool = False) -> Path:
    """Download published weights into the cache and check them; returns the cached file's path.

    The file goes to ``cache_path(key, cache_dir)`` (``$CRATE_EDU_CACHE`` or
    ``~/.cache/crate_edu/weights``, file ``<key>.pth``) through the one verified download path
    (``crate_edu.weights.download.download_verified``): fetched into a temporary folder next to it,
    checked (every expected key and shape, and the sha256 where one is recorded), then moved into
    place with an atomic rename, so the cache never holds a partial file. An existing cached file is
    checked and returned unless ``force=True``.

    Args:
        key: an official-weights key (``crate_edu.list_official()``) or a model name with one entry.
        cache_dir: cache folder (default as above).
        force: download again even if the file is cached.

    Raises:
        WeightsUnavailableError: never published, offline, dead link or any other download failure;
            the message gives the URL and the exact path to save a hand-downloaded copy at.
        CheckpointError: the downloaded (or cached) file fails the structural or sha256 check.
    """
    entry = get_official(key)
    target = cache_path(entry.key, cache_dir)
    if entry.source is None:
        raise _unavailable(entry, target, "it was never published")
    if target.is_file() and not force:
        try:
            _verify_file(entry, target, "cached file")
        except CheckpointError as exc:
            raise CheckpointError(
                f"{exc}; delete {target} or call download_official(..., force=True)"
            ) from exc
        return target
    return download_verified(
        target,
        fetch=lambda workdir: _fetch(entry, workdir),
        verify=lambda path: _verify_file(entry, path, "downloaded file"),
        unavailable=lambda reason: _unavailable(entry, target, reason),
    )


def _unavailable(entry: OfficialWeights, target: Path, reason: str) -> WeightsUnavailableError:
    model = entry.model or "<model>"
    where = (
        f"get the file by hand from {entry.url} and save it as {target}"
        if entry.url
        else "the authors never published this file"
    )
    return WeightsUnavailableError(
        f"could not obtain the official weights {entry.key!r}: {reason}; {where}; any local copy also "
        f"loads directly: crate_edu.load_official({model!r}, '/path/to/file')"
        + (f" (note: {entry.notes})" if entry.notes else "")
    )


def _fetch(entry: OfficialWeights, workdir: Path) -> Path:
    """Download ``entry`` into ``workdir``; returns the downloaded file (inside ``workdir``)."""
    if entry.source == "hf":
        return fetch_from_hub(entry.repo_id, entry.filename, workdir, entry.cache_name)
    if entry.source == "gdrive":
        return fetch_from_drive(entry.file_id, workdir / entry.cache_name)
    raise RuntimeError(f"unknown source {entry.source!r}")


def _verify_file(entry: OfficialWeights, path: Path, label: str) -> None:
    """Structural check (every key and shape) and sha256 check; raises ``CheckpointError``."""
    if entry.sha256 is not None:
        digest = sha256sum(path)
        if digest != entry.sha256.lower():
            raise CheckpointError(
                f"{label} {path}: sha256 {digest} differs from the recorded {entry.sha256}; the file is "
                f"corrupt or changed upstream; download it again (force=True) or from {entry.url}"
            )
    if entry.model is None:  # not loadable here: its layout is not ours to check
        return
    state_dict = read_state_dict(path, map_location="cpu")
    check_structure(entry.model, state_dict, path, _published_overrides(entry, state_dict), strict=True)


def _published_overrides(entry: OfficialWeights, state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """The shape a registry key's file must have: the preset with the entry's overrides; for a
    language model also the vocabulary and context read from the file (the published CRATE-LM's
    50304 ids are inferred from the official code, not read from the file: GPT-2's unpadded 50257
    must not be thrown away after a 983 MB download)."""
    overrides = dict(entry.overrides)
    if model_spec(entry.model).task == "language":
        overrides = {**infer_overrides(entry.model, state_dict, **overrides), **overrides}
    return overrides
