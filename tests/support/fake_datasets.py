"""Tiny datasets written in the real on-disk formats, for loader tests without network.

Every writer takes a root folder and returns what a test needs to check the loader against (the
pixel arrays and labels that were written).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


class Py2Pickler:
    """Writes a value the way Python 2's ``cPickle.dump(obj, f, protocol=2)`` wrote the CIFAR files
    (``cifar-10-python.tar.gz`` and ``cifar-100-python.tar.gz``, what torchvision's download unpacks).

    Python 2 ``str`` values (the keys, names and the raw array bytes) are BINSTRING opcodes; a numpy
    array is ``numpy.core.multiarray._reconstruct(numpy.ndarray, (0,), 'b')`` followed by a BUILD with
    ``(1, shape, dtype, is_fortran, raw bytes)``, and its dtype is ``numpy.dtype('u1', 0, 1)`` with
    the state ``(3, '|', None, None, None, -1, -1, 0)``: numpy 1.x's ``__reduce__`` output at
    protocol 2, with the module names of that time. Values may be dict, list, str, bytes (a Python 2
    str), int, bool, None, tuple and uint8 ``np.ndarray``.
    """

    def __init__(self) -> None:
        self.out = bytearray(b"\x80\x02")  # PROTO 2

    def dumps(self, obj: Any) -> bytes:
        self._value(obj)
        self.out += b"."  # STOP
        return bytes(self.out)

    def _string(self, raw: bytes) -> None:  # a Python 2 str: SHORT_BINSTRING / BINSTRING
        self.out += (b"U" + bytes([len(raw)]) if len(raw) < 256 else b"T" + struct.pack("<i", len(raw))) + raw

    def _int(self, v: int) -> None:
        if 0 <= v < 256:
            self.out += b"K" + bytes([v])  # BININT1
        elif 0 <= v < 65536:
            self.out += b"M" + struct.pack("<H", v)  # BININT2
        else:
            self.out += b"J" + struct.pack("<i", v)  # BININT

    def _tuple(self, items: Sequence[Any]) -> None:
        if 1 <= len(items) <= 3:
            for v in items:
                self._value(v)
            self.out += {1: b"\x85", 2: b"\x86", 3: b"\x87"}[len(items)]  # TUPLE1..3
        else:
            self.out += b"("  # MARK
            for v in items:
                self._value(v)
            self.out += b"t"  # TUPLE

    def _global(self, module: str, name: str) -> None:
        self.out += b"c" + module.encode() + b"\n" + name.encode() + b"\n"  # GLOBAL

    def _array(self, a: np.ndarray) -> None:
        if a.dtype != np.uint8:
            raise TypeError("this writer writes uint8 arrays, as the CIFAR files hold")
        self._global("numpy.core.multiarray", "_reconstruct")
        self._tuple([_Global("numpy", "ndarray"), (0,), b"b"])
        self.out += b"R"  # REDUCE: an empty array
        self.out += b"("  # MARK: its state (version, shape, dtype, is_fortran, raw bytes)
        self._int(1)
        self._tuple(tuple(a.shape))
        self._global("numpy", "dtype")
        self._tuple([b"u1", 0, 1])
        self.out += b"R"  # REDUCE: numpy.dtype('u1', 0, 1)
        self._tuple([3, b"|", None, None, None, -1, -1, 0])
        self.out += b"b"  # BUILD: the dtype's state
        self.out += b"\x89"  # NEWFALSE: C order
        self._string(np.ascontiguousarray(a).tobytes())
        self.out += b"tb"  # TUPLE, BUILD: the array's state

    def _value(self, obj: Any) -> None:
        if isinstance(obj, _Global):
            self._global(obj.module, obj.name)
        elif obj is None:
            self.out += b"N"
        elif isinstance(obj, bool):
            self.out += b"\x88" if obj else b"\x89"
        elif isinstance(obj, (int, np.integer)):
            self._int(int(obj))
        elif isinstance(obj, str):
            self._string(obj.encode("latin1"))
        elif isinstance(obj, bytes):
            self._string(obj)
        elif isinstance(obj, tuple):
            self._tuple(obj)
        elif isinstance(obj, list):
            self.out += b"](" if obj else b"]"  # EMPTY_LIST, MARK
            for v in obj:
                self._value(v)
            if obj:
                self.out += b"e"  # APPENDS
        elif isinstance(obj, dict):
            self.out += b"}("  # EMPTY_DICT, MARK
            for k, v in obj.items():
                self._value(k)
                self._value(v)
            self.out += b"u"  # SETITEMS
        elif isinstance(obj, np.ndarray):
            self._array(obj)
        else:
            raise TypeError(f"cannot write {type(obj).__name__} as a Python 2 pickle")


class _Global:
    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name


def dump_py2(obj: Any, path: Path) -> None:
    """Write ``obj`` to ``path`` as Python 2's cPickle at protocol 2 wrote the CIFAR files."""
    Path(path).write_bytes(Py2Pickler().dumps(obj))


def write_cifar(root: Path, kind: str = "cifar10", n_per_batch: int = 4, seed: int = 0) -> dict:
    """CIFAR python pickles: ``cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}`` or
    ``cifar-100-python/{train, test, meta}``, with ``n_per_batch`` random images per file, in the
    format of the real files (:class:`Py2Pickler`: Python 2 pickles, ``'data'`` a uint8 numpy array,
    ``'batch_label'`` and ``'filenames'`` as the real batches have them).

    Returns ``{'train': (images uint8 (N, 32, 32, 3), labels), 'test': (...), 'classes': [...]}``.
    """
    rng = np.random.default_rng(seed)
    if kind == "cifar10":
        folder, train_files, test_files = (
            root / "cifar-10-batches-py",
            [f"data_batch_{i}" for i in range(1, 6)],
            ["test_batch"],
        )
        label_key, n_classes = "labels", 10
        classes = [f"class{c}" for c in range(10)]
        meta_file = "batches.meta"
        meta = {"num_cases_per_batch": n_per_batch, "label_names": classes, "num_vis": 3072}
    else:
        folder, train_files, test_files = root / "cifar-100-python", ["train"], ["test"]
        label_key, n_classes = "fine_labels", 100
        classes = [f"fine{c}" for c in range(100)]
        meta_file = "meta"
        meta = {"fine_label_names": classes, "coarse_label_names": [f"coarse{c}" for c in range(20)]}
    folder.mkdir(parents=True)
    out = {"classes": classes}
    for split, files in (("train", train_files), ("test", test_files)):
        imgs, labels = [], []
        for f in files:
            hwc = rng.integers(0, 256, size=(n_per_batch, 32, 32, 3), dtype=np.uint8)
            lab = rng.integers(0, n_classes, size=n_per_batch).tolist()
            # the format: each row is the red plane, then green, then blue (1024 bytes each), row-major
            entry = {"batch_label": f"{split}ing batch {f}", label_key: lab}
            entry["data"] = hwc.transpose(0, 3, 1, 2).reshape(n_per_batch, 3072)
            if kind == "cifar100":
                entry["coarse_labels"] = [v // 5 for v in lab]
            entry["filenames"] = [f"{f}_{i}.png" for i in range(n_per_batch)]
            dump_py2(entry, folder / f)
            imgs.append(hwc)
            labels += lab
        out[split] = (np.concatenate(imgs), labels)
    dump_py2(meta, folder / meta_file)
    return out


def _save_image(path: Path, rng: np.random.Generator, size: tuple[int, int] = (20, 28)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)).save(path)


def write_image_folder(root: Path, classes: Sequence[str], per_class: int = 1, ext: str = ".JPEG") -> None:
    """An ImageFolder tree ``root/<class>/img_<k><ext>`` of small random images."""
    rng = np.random.default_rng(1)
    for c in classes:
        for k in range(per_class):
            _save_image(root / c / f"img_{k}{ext}", rng)


def write_pets(root: Path) -> dict:
    """``oxford-iiit-pet/{images/*.jpg, annotations/{trainval,test}.txt}`` for 3 breeds."""
    base = root / "oxford-iiit-pet"
    rng = np.random.default_rng(2)
    breeds = [("Abyssinian", 1, 1), ("american_bulldog", 2, 2), ("Bengal", 3, 1)]  # (name, class id, species)
    lines = {"trainval": [], "test": []}
    for name, cid, species in breeds:
        for k, split in enumerate(["trainval", "trainval", "test"]):
            image_id = f"{name}_{k + 1}"
            _save_image(base / "images" / f"{image_id}.jpg", rng)
            lines[split].append(f"{image_id} {cid} {species} 1")
    (base / "annotations").mkdir(parents=True)
    for split, ls in lines.items():
        (base / "annotations" / f"{split}.txt").write_text("\n".join(ls) + "\n")
    return {"trainval": 6, "test": 3}


def write_flowers(root: Path) -> dict:
    """``flowers-102/{jpg/image_00001.jpg.., imagelabels.mat, setid.mat}`` with 9 images of 3 classes."""
    from scipy.io import savemat

    base = root / "flowers-102"
    rng = np.random.default_rng(3)
    labels = np.array([1, 2, 3, 1, 2, 3, 102, 1, 2])  # 1-based classes of images 1..9
    for i in range(1, len(labels) + 1):
        _save_image(base / "jpg" / f"image_{i:05d}.jpg", rng)
    savemat(base / "imagelabels.mat", {"labels": labels[None, :]})
    setid = {"trnid": np.array([[1, 2, 3]]), "valid": np.array([[4, 5, 6]]), "tstid": np.array([[7, 8, 9]])}
    savemat(base / "setid.mat", setid)
    return {"labels": labels - 1, "trnid": [1, 2, 3], "valid": [4, 5, 6], "tstid": [7, 8, 9]}
