"""Datasets by name, with the splits, normalisation and augmentations of the official CRATE recipes.

    >>> from crate_edu.data import build_dataset, dataset_info
    >>> ds = build_dataset("digits", "train")            # offline, 1,438 images
    >>> x, y = ds[0]                                     # x: float32 (3, 32, 32), y: int
    >>> dataset_info("cifar10").mean                     # CIFAR-10 train statistics

Where the facts come from (the official Ma-Lab-Berkeley/CRATE repository):

- ``data/dataset.py`` (used by ``finetune.py``): CIFAR-10/100 through torchvision's train/test
  flag; ``Flowers102(split="train")`` for training and ``split="test"`` for testing (the 1,020
  ``val`` images are not used); ``OxfordIIITPet(split="trainval")`` / ``split="test"``.
- ``finetune.py``: 224 px; train ``RandomResizedCrop((224, 224))``, ``RandomHorizontalFlip``,
  ``RandAugment(2, 14)``; test ``Resize((224, 224))``; **ImageNet mean/std for every dataset**
  (the weights were pre-trained on ImageNet). Pass ``normalize="imagenet"`` to reproduce that
  exactly on CIFAR; by default CIFAR is normalised with its own train statistics, the usual choice
  when training from scratch at 32 px. (CRATE's patch embedding starts with a LayerNorm over each
  patch, so the choice matters little.)
- ``main.py`` (ImageNet): ``ImageFolder(DIR/train)`` with ``RandomResizedCrop(224)`` +
  ``RandomHorizontalFlip``; ``ImageFolder(DIR/val)`` with ``Resize(256)`` + ``CenterCrop(224)``;
  ImageNet mean/std.

On-disk layouts are torchvision's, so that ``torchvision`` downloads and ours are interchangeable,
and one ``--data-dir`` can hold them all::

    DIR/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}   (python pickles)
    DIR/cifar-100-python/{train, test, meta}
    DIR/oxford-iiit-pet/{images/*.jpg, annotations/{trainval,test}.txt}
    DIR/flowers-102/{jpg/image_00001.jpg.., imagelabels.mat, setid.mat}
    DIR/imagenette2-160/{train,val}/nXXXXXXXX/*.JPEG        (imagenette2-320, imagenette2 for 320px, full)
    DIR/{train,val}/nXXXXXXXX/*.JPEG  or  DIR/imagenet/{train,val}/...   (ImageNet, ImageNet-100)
    DIR/winter21_whole/nXXXXXXXX/*.JPEG  or  DIR/imagenet21k/{train,val}/nXXXXXXXX/*   (ImageNet-21K)

ImageNet-21K is the **Winter 2021 release** of the full ImageNet (image-net.org,
``winter21_whole.tar.gz``: 19,167 classes, about 13.15 M images, no train/val split), the release
whose class count the official CRATE-α 19,167-way pre-training head has (the ``fall11`` release,
21,841 classes, was withdrawn by image-net.org in 2021). The archive holds one tar per class;
extract each into a folder of its WordNet id (``DIR/winter21_whole/nXXXXXXXX/*.JPEG``). Its test
split is then held out per class: the last ``min(10, n // 10)`` files (by sorted name) of each
class of ``n`` images. A tree already split into ``train/`` and ``val/`` (``DIR/imagenet21k/``, or
Alibaba-MIIL's processed ImageNet-21K-P, ``imagenet21k_train/`` and ``imagenet21k_val/``: 10,450
classes of the same release) is read as it is. Labels are the positions of the class folders' WordNet
ids in sorted order, or in ``classes.txt`` (one id per line) when the folder holds one.

CIFAR and Flowers-102 are read by small readers here, not by the torchvision classes: those check
the MD5 of every file on each load, which no test file can pass; torchvision still does the
downloads (``download=True``, ``fetch_dataset``), where it verifies the archives' MD5.
"""

from __future__ import annotations

import codecs
import importlib
import os
import pickle
import re
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from crate_edu.data import synthetic
from crate_edu.data.base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DatasetFileError,
    DatasetInfo,
    DatasetUnavailableError,
    TensorImageDataset,
    default_data_dir,
)
from crate_edu.data.transforms import POLICIES, build_transform, check_policy

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
#: torchvision's Imagenette classes, in label (sorted WordNet id) order.
IMAGENETTE_WNIDS = (
    "n01440764", "n02102040", "n02979186", "n03000684", "n03028079",
    "n03394916", "n03417042", "n03425413", "n03445777", "n03888257",
)  # fmt: skip
IMAGENETTE_CLASSES = (
    "tench", "English springer", "cassette player", "chain saw", "church",
    "French horn", "garbage truck", "gas pump", "golf ball", "parachute",
)  # fmt: skip
IMAGENETTE_SIZES = ("160px", "320px", "full")
#: Classes of ImageNet-21K's Winter 2021 release, the size of the official CRATE-α pre-training head.
IMAGENET21K_CLASSES = 19167
#: At most this many images per class are held out for test from a tree without a split.
IMAGENET21K_HELD_OUT = 10


def imagenet100_classes() -> list[str]:
    """The 100 WordNet ids of the standard ImageNet-100 subset (the CMC paper's list), sorted.

    Label ``k`` of ``imagenet-100`` is the ``k``-th id of this list.
    """
    return list(_imagenet100_classes())


@lru_cache(maxsize=1)
def _imagenet100_classes() -> tuple[str, ...]:
    text = resources.files("crate_edu").joinpath("resources/imagenet100_classes.txt").read_text()
    wnids = sorted({line.strip() for line in text.splitlines() if line.strip()})
    if len(wnids) != 100:
        raise RuntimeError(f"imagenet100_classes.txt should list 100 distinct synsets, found {len(wnids)}")
    return tuple(wnids)


_INFOS: dict[str, DatasetInfo] = {
    info.name: info
    for info in [
        DatasetInfo(
            "cifar10", 10, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), CIFAR10_CLASSES, True,
            "CIFAR-10 (Krizhevsky 2009): 50,000 train / 10,000 test colour images, 32x32, 10 classes. "
            "Mean/std: per-channel statistics of the train split.",
            "cifar",
        ),
        DatasetInfo(
            "cifar100", 100, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), None, True,
            "CIFAR-100: 50,000 train / 10,000 test, 32x32, 100 fine classes (names read from the meta "
            "file). Mean/std: per-channel statistics of the train split.",
            "cifar",
        ),
        DatasetInfo(
            "oxford-pets", 37, 224, IMAGENET_MEAN, IMAGENET_STD, None, True,
            "Oxford-IIIT Pet: 37 cat and dog breeds; train = 'trainval' (3,680), test = 'test' (3,669), "
            "as in the official CRATE finetune.py.",
            "randaugment",
        ),
        DatasetInfo(
            "flowers102", 102, 224, IMAGENET_MEAN, IMAGENET_STD, None, True,
            "Oxford Flowers-102: train = 'train' (1,020 images, 10 per class), test = 'test' (6,149), as "
            "in the official CRATE finetune.py; include_val=True adds the 1,020 'val' images to train.",
            "randaugment",
        ),
        DatasetInfo(
            "imagenette", 10, 160, IMAGENET_MEAN, IMAGENET_STD, IMAGENETTE_CLASSES, True,
            "Imagenette v2 (fast.ai): 10 easy ImageNet classes, 9,469 train / 3,925 val; size='160px' "
            "(default), '320px' or 'full' (shorter side of the stored images).",
            "imagenet",
        ),
        DatasetInfo(
            "imagenet", 1000, 224, IMAGENET_MEAN, IMAGENET_STD, None, False,
            "ImageNet-1K (ILSVRC 2012): 1,281,167 train / 50,000 val images in an ImageFolder tree "
            "DIR/{train,val}/<wnid>/; cannot be downloaded automatically.",
            "imagenet",
        ),
        DatasetInfo(
            "imagenet21k", IMAGENET21K_CLASSES, 224, IMAGENET_MEAN, IMAGENET_STD, None, False,
            "ImageNet-21K, Winter 2021 release (image-net.org winter21_whole: 19,167 classes, about "
            "13.15 M images): DIR/winter21_whole/<wnid>/ with 10 images per class held out for test, "
            "or a tree split into DIR/imagenet21k/{train,val}/<wnid>/ (also ImageNet-21K-P's "
            "imagenet21k_train/ and imagenet21k_val/, 10,450 classes); cannot be downloaded "
            "automatically.",
            "imagenet",
        ),
        DatasetInfo(
            "imagenet-100", 100, 224, IMAGENET_MEAN, IMAGENET_STD, None, False,
            "ImageNet-100: the 100-class subset of the CMC paper (Tian et al. 2019), read from an "
            "ImageNet (or ImageNet-100) ImageFolder tree; about 1,300 train and 50 val images per class.",
            "imagenet",
        ),
        DatasetInfo(
            "digits", 10, 32, synthetic.DIGITS_MEAN, synthetic.DIGITS_STD, tuple("0123456789"), False,
            "scikit-learn's 1,797 handwritten 8x8 digits, upsampled to 32x32 (bilinear), 3 channels; "
            "fixed stratified split 1,438 train / 359 test. Ships with scikit-learn: no download.",
            "none",
        ),
        DatasetInfo(
            "cluttered-digits", 10, 32, synthetic.CLUTTERED_MEAN, synthetic.CLUTTERED_STD,
            tuple("0123456789"), False,
            "The digits at random scale, position and colour on textured scikit-image backgrounds, "
            "with a ground-truth foreground mask per image (ds.masks, ds.get(i, with_mask=True)). "
            "Generated at construction, deterministic given seed; no download.",
            "none",
        ),
    ]
}  # fmt: skip


def list_datasets() -> list[str]:
    """Names accepted by :func:`build_dataset`, :func:`dataset_info` and :func:`fetch_dataset`."""
    return list(_INFOS)


def dataset_info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` record of a dataset (no files are touched)."""
    try:
        info = _INFOS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(_INFOS)}") from None
    if name == "imagenet-100" and info.classes is None:
        info = replace(info, classes=_imagenet100_classes())
    return info


# --------------------------------------------------------------------------------------------------
# Readers for the formats whose torchvision classes insist on MD5 at load time


class _CifarUnpickler(pickle.Unpickler):
    """An unpickler that builds only what a CIFAR file holds: dicts, lists, strings, bytes, numbers
    and numpy arrays. Any other global is refused before it is looked up, so nothing in the file runs.

    The real files (``cifar-10-python.tar.gz``, ``cifar-100-python.tar.gz``) were written by Python 2's
    cPickle, protocol 2: a dict of ``str`` keys, ``'data'`` a uint8 numpy array pickled as
    ``numpy.core.multiarray._reconstruct(numpy.ndarray, (0,), 'b')`` with a ``numpy.dtype('u1')``
    state, labels as lists of ints. Files re-saved from Python 3 name ``numpy._core`` (numpy 2),
    use ``numpy._core.numeric._frombuffer`` (protocol 5) or ``_codecs.encode`` (bytes at protocol 2).
    """

    def find_class(self, module: str, name: str) -> Any:
        found = _cifar_globals().get((module, name))
        if found is None:
            raise _RefusedGlobal(f"{module}.{name}")
        return found


class _RefusedGlobal(pickle.UnpicklingError):
    """A pickle asked for a global that a CIFAR file never holds (``args[0]``: its dotted name)."""


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles of bytes use it, limited to plain text codecs."""
    if encoding.lower().replace("-", "").replace("_", "") not in ("latin1", "utf8", "ascii"):
        raise _RefusedGlobal(f"_codecs.encode with codec {encoding!r}")
    return codecs.encode(text, encoding)


@lru_cache(maxsize=1)
def _cifar_globals() -> dict[tuple[str, str], Any]:
    def core(sub: str) -> Any:  # numpy >= 2 keeps these in numpy._core, numpy 1 in numpy.core
        try:
            return importlib.import_module(f"numpy._core.{sub}")
        except ImportError:  # pragma: no cover - numpy < 1.26
            return importlib.import_module(f"numpy.core.{sub}")

    multiarray, numeric = core("multiarray"), core("numeric")
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{package}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer
    return allowed


def _text(value: Any) -> Any:
    """Python 2 strings read as bytes (``encoding='bytes'`` files) become str."""
    return value.decode("latin1") if isinstance(value, bytes) else value


def _genuine_copy_hint(name: str, folder: Path) -> str:
    return (
        f"delete {folder} and get a genuine copy with `crate-edu fetch {name}` (torchvision checks the "
        f"archive's MD5) or from {_CIFAR_SOURCE}"
    )


def read_cifar_pickle(path: Path, name: str = "cifar10") -> dict[str, Any]:
    """Read one CIFAR python file (a batch or the meta file) without running anything in it.

    Returns the pickled dict with str keys. Only dicts, lists, strings, bytes, numbers and numpy
    arrays are built (see :class:`_CifarUnpickler`); NumPy object arrays are refused too.

    Raises:
        DatasetFileError: the file asks for any other Python object (the message names it), is
            truncated or corrupt, or is not a dict; the message says how to get a genuine copy.
    """
    path = Path(path)
    hint = _genuine_copy_hint(name, path.parent)
    try:
        with open(path, "rb") as fh:
            entry = _CifarUnpickler(fh, encoding="latin1").load()
    except _RefusedGlobal as exc:
        raise DatasetFileError(
            f"{path} is not a CIFAR file: it asks to load the Python object {exc.args[0]}, which CIFAR "
            f"files never hold (only dicts, lists, strings and numpy arrays), and crate_edu does not run "
            f"code from data files; {hint}"
        ) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError,
            MemoryError, UnicodeError) as exc:  # fmt: skip
        raise DatasetFileError(
            f"{path} is truncated or not a CIFAR python file ({type(exc).__name__}: "
            f"{' '.join(str(exc).split())[:160]}); {hint}"
        ) from None
    if not isinstance(entry, dict):
        raise DatasetFileError(f"{path} holds a {type(entry).__name__}, not a CIFAR dict; {hint}")
    entry = {_text(k): v for k, v in entry.items()}
    for key, value in entry.items():
        if isinstance(value, np.ndarray) and value.dtype.hasobject:
            raise DatasetFileError(
                f"{path}: entry {key!r} is a numpy array of Python objects, which CIFAR files never hold; "
                f"{hint}"
            )
    return entry


def read_cifar_batches(
    folder: Path, files: Sequence[str], label_key: str, num_classes: int | None = None, name: str = "cifar10"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Read CIFAR python-pickle batches: images uint8 ``(N, 3, 32, 32)``, labels int64 ``(N,)``.

    Each file is a pickled dict with ``'data'`` (uint8 ``(n, 3072)``: the red, green, then blue
    32×32 planes, row-major) and ``label_key`` (a list of n ints); the same format torchvision reads.
    Files are read by :func:`read_cifar_pickle` (nothing in them runs) and checked: shapes, label
    count and, with ``num_classes``, the label range.

    Raises:
        DatasetFileError: a file that is not a CIFAR batch (one line: which file, what is wrong).
    """
    data, labels = [], []
    for f in files:
        path = Path(folder) / f
        entry = read_cifar_pickle(path, name)
        hint = _genuine_copy_hint(name, path.parent)
        raw, lab = entry.get("data"), entry.get(label_key)
        if not isinstance(raw, np.ndarray) or raw.ndim != 2 or raw.shape[1] != 3072 or raw.dtype != np.uint8:
            got = f"{raw.dtype} {raw.shape}" if isinstance(raw, np.ndarray) else type(raw).__name__
            raise DatasetFileError(
                f"{path}: 'data' should be a uint8 array of shape (n, 3072), got {got}; {hint}"
            )
        if not isinstance(lab, (list, tuple, np.ndarray)) or len(lab) != raw.shape[0]:
            got = f"{len(lab)} labels" if isinstance(lab, (list, tuple, np.ndarray)) else "none"
            raise DatasetFileError(
                f"{path}: {label_key!r} should hold one label per image ({raw.shape[0]}), got {got}; {hint}"
            )
        lab = [int(v) for v in lab]
        if num_classes is not None and lab and not 0 <= min(lab) <= max(lab) < num_classes:
            raise DatasetFileError(
                f"{path}: labels should be in 0..{num_classes - 1}, found {min(lab)}..{max(lab)}; {hint}"
            )
        data.append(raw.reshape(-1, 3, 32, 32))
        labels.extend(lab)
    return torch.from_numpy(np.concatenate(data)), torch.tensor(labels, dtype=torch.int64)


def read_cifar_classes(path: Path, names_key: str, num_classes: int, name: str = "cifar10") -> list[str]:
    """The class names stored in a CIFAR meta file (``batches.meta`` or ``meta``), checked."""
    entry = read_cifar_pickle(path, name)
    names = entry.get(names_key)
    if not isinstance(names, (list, tuple)) or len(names) != num_classes:
        got = f"{len(names)} entries" if isinstance(names, (list, tuple)) else "none"
        raise DatasetFileError(
            f"{path}: {names_key!r} should list {num_classes} class names, got {got}; "
            f"{_genuine_copy_hint(name, Path(path).parent)}"
        )
    return [str(_text(n)) for n in names]


_CIFAR_SOURCE = "https://www.cs.toronto.edu/~kriz/cifar.html"

_CIFAR = {
    "cifar10": {
        "folder": "cifar-10-batches-py",
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test_batch"],
        "meta": "batches.meta",
        "label_key": "labels",
        "names_key": "label_names",
    },
    "cifar100": {
        "folder": "cifar-100-python",
        "train": ["train"],
        "test": ["test"],
        "meta": "meta",
        "label_key": "fine_labels",
        "names_key": "fine_label_names",
    },
}


class ImageFileDataset(Dataset):
    """Photographs on disk: ``ds[i]`` = ``(transform(PIL RGB image), label)``."""

    def __init__(
        self,
        paths: Sequence[Path],
        labels: Sequence[int],
        transform: Callable | None = None,
        classes: Sequence[str] | None = None,
    ) -> None:
        self.paths = [Path(p) for p in paths]
        self.targets = [int(v) for v in labels]
        self.transform = transform
        self.classes = list(classes) if classes is not None else None

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        from PIL import Image

        with Image.open(self.paths[i]) as im:
            img = im.convert("RGB")
        return (self.transform(img) if self.transform else img), self.targets[i]


def read_flowers102(base: Path, splits: Sequence[str]) -> tuple[list[Path], list[int]]:
    """Image paths and labels (0..101) of Flowers-102 splits from ``setid.mat`` / ``imagelabels.mat``.

    ``setid.mat`` holds the 1-based image ids of each split (``trnid``, ``valid``, ``tstid``);
    ``imagelabels.mat`` holds ``labels``, the 1-based class of every image; images are
    ``jpg/image_{id:05d}.jpg``.
    """
    from scipy.io import loadmat

    key = {"train": "trnid", "val": "valid", "test": "tstid"}
    set_ids = loadmat(base / "setid.mat", squeeze_me=True)
    all_labels = np.atleast_1d(loadmat(base / "imagelabels.mat", squeeze_me=True)["labels"])
    paths, labels = [], []
    for split in splits:
        for image_id in np.atleast_1d(set_ids[key[split]]).tolist():
            paths.append(base / "jpg" / f"image_{int(image_id):05d}.jpg")
            labels.append(int(all_labels[int(image_id) - 1]) - 1)
    return paths, labels


# --------------------------------------------------------------------------------------------------
# Finding the files, and the one error message


def _resolve_dir(data_dir: str | Path | None) -> Path:
    return Path(data_dir).expanduser() if data_dir is not None else default_data_dir()


def _locate(data_dir: Path, folder: str) -> Path:
    """``data_dir/folder``, or ``data_dir`` itself when the user pointed at the dataset folder."""
    return data_dir if data_dir.name == folder else data_dir / folder


def _unavailable(name: str, looked_for: str, *, reason: str = "") -> DatasetUnavailableError:
    info = _INFOS[name]
    how = (
        f"run `crate-edu fetch {name}` on a machine with internet access and copy the folder here, "
        f"or pass --data-dir pointing at the folder that holds it (build_dataset(..., data_dir=...)); "
        f"download=True fetches it directly where there is internet"
        if info.downloadable
        else _IMAGENET_HOWTO
    )
    if name == "imagenet21k":
        how = _IMAGENET21K_HOWTO
    why = f" ({reason})" if reason else ""
    return DatasetUnavailableError(
        f"dataset '{name}' not found{why}: looked for {looked_for}. To get it: {how}."
    )


_IMAGENET_HOWTO = (
    "ImageNet has no public download (it needs an account at https://image-net.org): "
    "download ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar and ILSVRC2012_devkit_t12.tar.gz into DIR, "
    "run torchvision.datasets.ImageNet(DIR, split='train') and (DIR, split='val') once to unpack them "
    "into DIR/train/<wnid>/*.JPEG and DIR/val/<wnid>/*.JPEG (the val images sorted into class folders), "
    "then pass --data-dir DIR; for imagenet-100 a tree holding only the 100 class folders also works"
)


def _download(name: str, root: Path, looked_for: str, fn: Callable[[], Any]) -> None:
    """Run a torchvision download into ``root``, turning any failure into one DatasetUnavailableError."""
    root.mkdir(parents=True, exist_ok=True)
    try:
        fn()
    except Exception as e:  # network errors, HTTP errors, MD5 mismatches, full disks ...
        reason = f"the download into {root} failed: {type(e).__name__}: {e}"
        raise _unavailable(name, looked_for, reason=reason) from None


# --------------------------------------------------------------------------------------------------
# One builder per family. Each returns a Dataset of (float image (3, S, S), int label).


def _build_cifar(name, train, root, transform, download, mean, std, **kw) -> Dataset:
    spec = _CIFAR[name]
    folder = _locate(root, spec["folder"])
    files = spec["train"] if train else spec["test"]
    missing = [f for f in [*files, spec["meta"]] if not (folder / f).is_file()]
    looked_for = f"{folder} with the python pickles {', '.join(missing)}"
    if missing and download:
        _download(name, folder.parent, looked_for, lambda: _download_cifar(name, folder.parent))
        missing = [f for f in [*files, spec["meta"]] if not (folder / f).is_file()]
    if missing:
        raise _unavailable(name, looked_for)
    n = _INFOS[name].num_classes
    images, labels = read_cifar_batches(folder, files, spec["label_key"], n, name)
    classes = read_cifar_classes(folder / spec["meta"], spec["names_key"], n, name)
    return TensorImageDataset(images, labels, mean=mean, std=std, transform=transform, classes=classes)


def _download_cifar(name: str, root: Path) -> None:
    """Download and unpack the CIFAR archive into ``root`` with torchvision's download helper, which
    checks the archive's MD5 (the torchvision dataset classes are not used: they unpickle the files
    with ``pickle.load``)."""
    import torchvision
    from torchvision.datasets import utils

    tv = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
    utils.download_and_extract_archive(tv.url, str(root), filename=tv.filename, md5=tv.tgz_md5)


def _build_pets(name, train, root, transform, download, mean, std, **kw) -> Dataset:
    import torchvision

    base = _locate(root, "oxford-iiit-pet")
    split = "trainval" if train else "test"
    ann = base / "annotations" / f"{split}.txt"
    looked_for = f"{base}/images/*.jpg and {ann}"
    if not (ann.is_file() and (base / "images").is_dir()) and download:
        tv = torchvision.datasets.OxfordIIITPet
        _download(name, base.parent, looked_for, lambda: tv(str(base.parent), download=True))
    if not (ann.is_file() and (base / "images").is_dir()):
        raise _unavailable(name, looked_for)
    return torchvision.datasets.OxfordIIITPet(str(base.parent), split=split, transform=transform)


def _build_flowers(name, train, root, transform, download, mean, std, include_val: bool = False, **kw):
    base = _locate(root, "flowers-102")
    needed = [base / "setid.mat", base / "imagelabels.mat", base / "jpg"]
    looked_for = f"{base} with jpg/, setid.mat and imagelabels.mat"
    if not all(p.exists() for p in needed) and download:
        import torchvision

        tv = torchvision.datasets.Flowers102
        _download(name, base.parent, looked_for, lambda: tv(str(base.parent), download=True))
    if not all(p.exists() for p in needed):
        raise _unavailable(name, looked_for)
    splits = (["train", "val"] if include_val else ["train"]) if train else ["test"]
    paths, labels = read_flowers102(base, splits)
    return ImageFileDataset(paths, labels, transform)


def _build_imagenette(name, train, root, transform, download, mean, std, size: str = "160px", **kw):
    import torchvision

    if size not in IMAGENETTE_SIZES:
        raise ValueError(f"unknown Imagenette size {size!r}; choose one of {', '.join(IMAGENETTE_SIZES)}")
    folder_name = {"160px": "imagenette2-160", "320px": "imagenette2-320", "full": "imagenette2"}[size]
    base = _locate(root, folder_name)
    split = "train" if train else "val"
    looked_for = f"{base / split}/<wnid>/*.JPEG (Imagenette v2, size {size})"
    if not (base / split).is_dir() and download:
        tv = torchvision.datasets.Imagenette
        _download(name, base.parent, looked_for, lambda: tv(str(base.parent), size=size, download=True))
    if not (base / split).is_dir():
        raise _unavailable(name, looked_for)
    return torchvision.datasets.Imagenette(str(base.parent), split=split, size=size, transform=transform)


def _imagenet_root(name: str, root: Path, split_dir: str) -> Path:
    candidates = [root, root / name, root / "imagenet"]
    if name == "imagenet-100":
        candidates.insert(2, root / "imagenet100")
    for c in candidates:
        if (c / split_dir).is_dir():
            return c
    raise _unavailable(name, " or ".join(str(c / split_dir) for c in candidates) + " (an ImageFolder tree)")


def _restricted_image_folder(root: Path, wnids: Sequence[str], transform: Callable | None) -> Dataset:
    """``ImageFolder`` over only the class folders ``wnids``; label k = ``wnids[k]``."""
    from torchvision.datasets import ImageFolder

    class _Subset(ImageFolder):
        def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
            missing = [w for w in wnids if not (Path(directory) / w).is_dir()]
            if missing:
                raise DatasetUnavailableError(
                    f"dataset 'imagenet-100' incomplete: {len(missing)} of its {len(wnids)} class folders "
                    f"are missing from {directory} (first: {', '.join(missing[:5])}); the class list is "
                    f"crate_edu/resources/imagenet100_classes.txt; point --data-dir at an ImageNet tree "
                    f"DIR/{{train,val}}/<wnid>/ that holds all of them"
                )
            return list(wnids), {w: k for k, w in enumerate(wnids)}

    return _Subset(str(root), transform=transform)


def _build_imagenet(name, train, root, transform, download, mean, std, **kw) -> Dataset:
    from torchvision.datasets import ImageFolder

    # download is ignored: ImageNet has no public download (the error below says how to get it)
    split_dir = "train" if train else "val"
    base = _imagenet_root(name, root, split_dir)
    if name == "imagenet-100":
        return _restricted_image_folder(base / split_dir, imagenet100_classes(), transform)
    try:
        return ImageFolder(str(base / split_dir), transform=transform)
    except FileNotFoundError as e:
        raise _unavailable(name, str(base / split_dir), reason=str(e)) from None


_IMAGENET21K_HOWTO = (
    "ImageNet-21K has no automatic download (it needs an account at https://image-net.org): download "
    "the Winter 2021 release winter21_whole.tar.gz, unpack it into DIR/winter21_whole/ and extract each "
    "per-class tar into a folder of its name (cd DIR/winter21_whole; for f in n*.tar; do mkdir "
    "${f%.tar} && tar -xf $f -C ${f%.tar} && rm $f; done), then pass --data-dir DIR; a tree split into "
    "DIR/imagenet21k/{train,val}/<wnid>/ (or ImageNet-21K-P's imagenet21k_train/, imagenet21k_val/) "
    "works too"
)
_WNID = re.compile(r"n\d{8}$")
_IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".webp", ".bmp")


def _class_folders(folder: Path) -> list[str]:
    """The WordNet-id folders (``nXXXXXXXX``) directly in ``folder``, sorted."""
    try:
        with os.scandir(folder) as entries:
            return sorted(e.name for e in entries if _WNID.match(e.name) and e.is_dir())
    except (FileNotFoundError, NotADirectoryError):
        return []


def _image_files(folder: Path) -> list[str]:
    """The image file names in one class folder, sorted."""
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if e.name.lower().endswith(_IMAGE_SUFFIXES) and e.is_file())


def _imagenet21k_layout(root: Path) -> tuple[Path, Path | None, Path | None]:
    """``(base, train folder, test folder)``: a split tree gives both folders; a release tree with
    class folders gives ``(base, None, None)``. Raises the one-line error when none is found."""
    candidates = [root / "imagenet21k", root / "winter21_whole", root / "imagenet21k_resized", root]
    for c in candidates:
        for train, test in (("train", "val"), ("imagenet21k_train", "imagenet21k_val")):
            if (c / train).is_dir() and (c != root or train != "train"):  # DIR/train is ImageNet-1K's
                return c, c / train, c / test
        if _class_folders(c):
            return c, None, None
    tars = [c for c in candidates if c.is_dir() and any(c.glob("n*.tar"))]
    reason = f"{tars[0]} holds the per-class tars, not yet extracted" if tars else ""
    looked = " or ".join(str(c) for c in candidates[:3])
    raise _unavailable(
        "imagenet21k",
        f"{looked} with one folder per WordNet id (or train/ and val/ folders of them)",
        reason=reason,
    )


def read_imagenet21k_classes(base: Path, class_folder: Path) -> list[str]:
    """The class list of an ImageNet-21K tree: ``base/classes.txt`` (one WordNet id per line, in label
    order) when it exists, else the WordNet-id folders of ``class_folder`` in sorted order.

    Raises:
        DatasetFileError: more classes than the Winter 2021 release's 19,167 (e.g. the withdrawn
            fall11 release's 21,841), or a ``classes.txt`` that repeats an id.
    """
    listed = base / "classes.txt"
    if listed.is_file():
        classes = [line.strip() for line in listed.read_text().splitlines() if line.strip()]
        where = str(listed)
    else:
        classes, where = _class_folders(class_folder), f"{class_folder} (class folders)"
    if len(set(classes)) != len(classes):
        raise DatasetFileError(f"{where} lists a WordNet id twice; list each class once, in label order")
    if len(classes) > IMAGENET21K_CLASSES:
        raise DatasetFileError(
            f"{where} holds {len(classes):,} classes, more than the {IMAGENET21K_CLASSES:,} of "
            "ImageNet-21K's Winter 2021 release that the model's head has (the withdrawn fall11 release "
            "has 21,841); use the winter21_whole release from image-net.org"
        )
    return classes


def _build_imagenet21k(name, train, root, transform, download, mean, std, **kw) -> Dataset:
    # download is ignored: ImageNet-21K has no public download (the error says how to get it)
    base, train_dir, test_dir = _imagenet21k_layout(root)
    classes = read_imagenet21k_classes(base, train_dir if train_dir is not None else base)
    label = {w: k for k, w in enumerate(classes)}
    paths: list[Path] = []
    labels: list[int] = []
    if train_dir is not None:  # a split tree: read the split's folder as it is
        folder = train_dir if train else test_dir
        if not folder.is_dir():  # type: ignore[union-attr]
            raise _unavailable(name, f"{folder} next to {train_dir} (the test split)")
        for wnid in _class_folders(folder):  # type: ignore[arg-type]
            if wnid not in label:
                raise DatasetFileError(
                    f"{folder / wnid} is a class that {train_dir} (or classes.txt) does not have; "  # type: ignore[operator]
                    "the test split's classes must be among the training classes"
                )
            files = _image_files(folder / wnid)  # type: ignore[operator]
            paths += [folder / wnid / f for f in files]  # type: ignore[operator]
            labels += [label[wnid]] * len(files)
    else:  # the release tree: hold out the last files of each class for test
        for wnid in classes:
            files = _image_files(base / wnid) if (base / wnid).is_dir() else []
            held = min(IMAGENET21K_HELD_OUT, len(files) // 10)
            part = files[: len(files) - held] if train else files[len(files) - held :]
            paths += [base / wnid / f for f in part]
            labels += [label[wnid]] * len(part)
    if not paths:
        raise _unavailable(name, f"{base}: image files (.JPEG, .jpg, .png, .webp) in its class folders")
    return ImageFileDataset(paths, labels, transform, classes=classes)


def _build_digits(name, train, root, transform, download, mean, std, image_size: int = 32, **kw) -> Dataset:
    images, labels = synthetic.digits_arrays("train" if train else "test", image_size)
    return TensorImageDataset(
        images, labels, mean=mean, std=std, transform=transform, classes=list("0123456789")
    )


def _build_cluttered(name, train, root, transform, download, mean, std, image_size=32, seed=0, **kw):
    return synthetic.ClutteredDigits(
        "train" if train else "test",
        image_size=image_size,
        seed=seed,
        mean=mean,
        std=std,
        transform=transform,
        **kw,
    )


_BUILDERS: dict[str, Callable[..., Dataset]] = {
    "cifar10": _build_cifar,
    "cifar100": _build_cifar,
    "oxford-pets": _build_pets,
    "flowers102": _build_flowers,
    "imagenette": _build_imagenette,
    "imagenet": _build_imagenet,
    "imagenet-100": _build_imagenet,
    "imagenet21k": _build_imagenet21k,
    "digits": _build_digits,
    "cluttered-digits": _build_cluttered,
}
#: The dataset-specific keyword options that ``build_dataset`` passes on (anything else is an error).
_OPTIONS: dict[str, tuple[str, ...]] = {
    "imagenette": ("size",),
    "flowers102": ("include_val",),
    "cluttered-digits": (
        "samples_per_digit",
        "clutter",
        "texture_contrast",
        "fragments",
        "min_contrast",
        "scale",
    ),
}
#: Datasets whose images are generated in memory at the requested size (no resize step needed).
_GENERATED = ("digits", "cluttered-digits")
#: Datasets stored at one fixed square size.
_NATIVE = {"cifar10": 32, "cifar100": 32}


def _normalisation(info: DatasetInfo, normalize) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The per-channel (mean, std) that ``normalize`` names (see :func:`build_dataset`)."""
    if normalize is None or normalize == "dataset":
        return info.mean, info.std
    if normalize == "imagenet":
        return IMAGENET_MEAN, IMAGENET_STD
    if isinstance(normalize, (tuple, list)) and len(normalize) == 2:
        return tuple(normalize[0]), tuple(normalize[1])
    raise ValueError(f"normalize must be None, 'dataset', 'imagenet' or (mean, std), got {normalize!r}")


def _policy(name: str, info: DatasetInfo, S: int, augment: str | None) -> str:
    """The augmentation policy: ``augment``, or the dataset's default (RandAugment, the fine-tuning
    recipe's, for CIFAR resized above its native size)."""
    if augment is not None:
        return check_policy(augment)
    if name in _NATIVE and S != _NATIVE[name]:
        return "randaugment"
    return info.default_augment


def build_dataset(
    name: str,
    split: str = "train",
    *,
    data_dir: str | Path | None = None,
    image_size: int | None = None,
    augment: str | None = None,
    download: bool = False,
    seed: int = 0,
    normalize: str | tuple[Sequence[float], Sequence[float]] | None = None,
    randaugment_magnitude: float | None = None,
    **kw: Any,
) -> Dataset:
    """Build a dataset split whose items are ``(image, label)``.

    Args:
        name: one of :func:`list_datasets`.
        split: ``'train'`` or ``'test'`` (``'val'`` is accepted as another name for ``'test'``; for
            ImageNet and Imagenette the test split is their ``val`` folder).
        data_dir: root folder of the downloaded datasets (layouts in the module docstring); default
            :func:`default_data_dir`. Ignored by ``digits`` and ``cluttered-digits``.
        image_size: side ``S`` of the output images in pixels; default ``dataset_info(name).image_size``.
        augment: a policy of :mod:`crate_edu.data.transforms` (``'none'``, ``'cifar'``, ``'shift'``,
            ``'randaugment'``, ``'imagenet'``), or None for the recipe default: the dataset's
            ``default_augment`` (for CIFAR resized above 32 px: ``'randaugment'``, the fine-tuning
            recipe). The test split always gets the policy's deterministic test transform.
        download: fetch the files with torchvision if they are missing (needs internet).
        seed: the realisation of generated datasets (``cluttered-digits``); keep it fixed across
            training seeds so that every run sees the same test set. Ignored by the others.
        normalize: None or ``'dataset'`` for ``dataset_info(name).mean/std``; ``'imagenet'`` for
            the ImageNet statistics (what ``finetune.py`` uses on every dataset); or ``(mean, std)``.
        randaugment_magnitude: the magnitude of the RandAugment policies (None: the policy's own;
            see :func:`crate_edu.data.transforms.build_transform`).
        **kw: dataset options: ``size`` (imagenette: ``'160px'``, ``'320px'``, ``'full'``),
            ``include_val`` (flowers102), and the ``cluttered-digits`` options of
            :class:`crate_edu.data.synthetic.ClutteredDigits`.

    Returns:
        A ``torch.utils.data.Dataset``; ``ds[i]`` is ``(x, y)`` with ``x`` float32 ``(3, S, S)``
        normalised per channel and ``y`` an int in ``0 .. num_classes - 1``.

    Raises:
        DatasetUnavailableError: the files are not under ``data_dir`` and ``download`` is False or
            the download failed. ``ValueError``: an unknown name, split, policy or option.
    """
    info = dataset_info(name)
    unknown = sorted(set(kw) - set(_OPTIONS.get(name, ())))
    if unknown:
        takes = ", ".join(_OPTIONS.get(name, ())) or "none"
        raise ValueError(f"unknown option(s) {', '.join(unknown)} for dataset '{name}'; it takes: {takes}")
    if split not in ("train", "test", "val"):
        raise ValueError(f"unknown split {split!r}; choose 'train' or 'test'")
    train = split == "train"
    S = int(image_size) if image_size is not None else info.image_size
    if S <= 0:
        raise ValueError(f"image_size must be a positive number of pixels, got {image_size}")
    mean, std = _normalisation(info, normalize)
    policy = _policy(name, info, S, augment)
    native = S if name in _GENERATED else _NATIVE.get(name)
    transform: Callable | None = build_transform(
        policy, train, S, mean, std, native_size=native, magnitude=randaugment_magnitude
    )
    if native == S and (policy == "none" or not train) and not policy.startswith("imagenet"):
        transform = None  # fixed-size tensors already at S: normalise directly (fast path)

    root = _resolve_dir(data_dir)
    extra = dict(kw)
    if name in _GENERATED:
        extra["image_size"] = S
    if name == "cluttered-digits":
        extra["seed"] = seed
    ds = _BUILDERS[name](name, train, root, transform, download, mean, std, **extra)
    if isinstance(ds, (TensorImageDataset, synthetic.ClutteredDigits)):
        # what crate_edu.data.loader reads to build and augment these batches on the GPU instead
        ds.augment, ds.image_size = policy, S
    return ds


def fetch_dataset(name: str, data_dir: str | Path | None = None, **kw: Any) -> Path:
    """Download a dataset ahead of time (torchvision verifies the archives' MD5) and return its folder.

    ``digits`` and ``cluttered-digits`` ship with scikit-learn / scikit-image: nothing to do, the
    data root is returned. ImageNet and ImageNet-100 cannot be downloaded: raises
    :class:`DatasetUnavailableError` explaining how to obtain them and lay out the folder.
    ``kw``: ``size`` for imagenette (default ``'160px'``).
    """
    info = dataset_info(name)
    root = _resolve_dir(data_dir)
    if name in _GENERATED:
        return root
    if not info.downloadable:
        howto = _IMAGENET21K_HOWTO if name == "imagenet21k" else _IMAGENET_HOWTO
        raise DatasetUnavailableError(f"dataset '{name}' cannot be fetched automatically: {howto}.")
    # Building both splits with download=True fetches (and MD5-checks) whatever is missing.
    for split in ("train", "test"):
        build_dataset(name, split, data_dir=root, download=True, augment="none", **kw)
    if name in _CIFAR:
        return _locate(root, _CIFAR[name]["folder"])
    if name == "imagenette":
        size = kw.get("size", "160px")
        return _locate(
            root, {"160px": "imagenette2-160", "320px": "imagenette2-320", "full": "imagenette2"}[size]
        )
    return _locate(root, {"oxford-pets": "oxford-iiit-pet", "flowers102": "flowers-102"}[name])


__all__ = [
    "POLICIES",
    "DatasetFileError",
    "DatasetInfo",
    "DatasetUnavailableError",
    "build_dataset",
    "dataset_info",
    "default_data_dir",
    "fetch_dataset",
    "imagenet100_classes",
    "list_datasets",
    "read_cifar_batches",
    "read_cifar_classes",
    "read_cifar_pickle",
    "read_imagenet21k_classes",
]
