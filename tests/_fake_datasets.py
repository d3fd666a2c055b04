"""Tiny datasets written in the real on-disk formats, for loader tests without network.

Every writer takes a root folder and returns what a test needs to check the loader against (the
pixel arrays and labels that were written).
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image


def write_cifar(root: Path, kind: str = "cifar10", n_per_batch: int = 4, seed: int = 0) -> dict:
    """CIFAR python pickles: ``cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}`` or
    ``cifar-100-python/{train, test, meta}``, with ``n_per_batch`` random images per file.

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
        meta_file, meta = "batches.meta", {"label_names": classes, "num_cases_per_batch": n_per_batch}
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
            entry = {"data": hwc.transpose(0, 3, 1, 2).reshape(n_per_batch, 3072), label_key: lab}
            if kind == "cifar100":
                entry["coarse_labels"] = [v // 5 for v in lab]
            entry["filenames"] = [f"{f}_{i}.png" for i in range(n_per_batch)]
            with open(folder / f, "wb") as fh:
                pickle.dump(entry, fh)
            imgs.append(hwc)
            labels += lab
        out[split] = (np.concatenate(imgs), labels)
    with open(folder / meta_file, "wb") as fh:
        pickle.dump(meta, fh)
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
