"""crate_edu.evaluation.batches: one batching helper for tensors, (images, labels), datasets and loaders."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from crate_edu.data.base import TensorImageDataset
from crate_edu.evaluation.batches import iter_batches

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def _dataset(n: int = 11) -> TensorImageDataset:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 4, 4), dtype=torch.uint8, generator=g)
    return TensorImageDataset(images, torch.arange(n) % 3, mean=MEAN, std=STD)


class _ItemByItem:
    """The same dataset seen only through ``len`` and ``[i]`` (no ``images``: no whole-batch read)."""

    def __init__(self, ds):
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int):
        return self.ds[i]


def test_a_tensor_in_order_with_limit_and_order():
    x = torch.arange(10.0).view(10, 1, 1, 1)
    assert [b.flatten().tolist() for b in iter_batches(x, 4)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert [b.flatten().tolist() for b in iter_batches(x, 4, limit=6)] == [[0, 1, 2, 3], [4, 5]]
    order = torch.tensor([9, 0, 5, 1, 7])
    assert [b.flatten().tolist() for b in iter_batches(x, 2, order=order)] == [[9, 0], [5, 1], [7]]
    assert [b.flatten().tolist() for b in iter_batches(x, 2, order=order, limit=3)] == [[9, 0], [5]]
    assert list(iter_batches(x, 4, limit=0)) == []


def test_images_and_labels_tuple():
    x, y = torch.randn(5, 3, 2, 2), torch.arange(5)
    pairs = list(iter_batches((x, y), 2, with_labels=True))
    assert [b[1].tolist() for b in pairs] == [[0, 1], [2, 3], [4]]
    assert torch.equal(torch.cat([b[0] for b in pairs]), x)
    assert torch.equal(torch.cat(list(iter_batches((x, y), 3))), x)  # images only
    with pytest.raises(ValueError, match="differ in length: 5 vs 4"):
        iter_batches((x, y[:4]), 2)


@pytest.mark.parametrize("with_labels", [False, True])
def test_a_tensor_dataset_is_read_whole_batches_with_the_same_numbers(with_labels):
    """uint8 images + normalisation read a batch at a time give the bits of item-by-item reading."""
    ds = _dataset()
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(1))
    for kw in ({}, {"limit": 7}, {"order": order}, {"order": order, "limit": 5}):
        fast = list(iter_batches(ds, 4, with_labels=with_labels, **kw))
        slow = list(iter_batches(_ItemByItem(ds), 4, with_labels=with_labels, **kw))
        assert len(fast) == len(slow) > 0
        for a, b in zip(fast, slow, strict=True):
            if with_labels:
                assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[1].dtype == torch.int64
            else:
                assert torch.equal(a, b)
    idx = order[:5].tolist()
    expected = torch.stack([ds[i][0] for i in idx])
    assert torch.equal(torch.cat(list(iter_batches(ds, 2, order=order, limit=5))), expected)


def test_a_dataloader_passes_its_own_batches():
    x, y = torch.randn(7, 3, 2, 2), torch.arange(7)
    loader = DataLoader(TensorDataset(x, y), batch_size=3)
    pairs = list(iter_batches(loader, 100, with_labels=True))
    assert [len(b[1]) for b in pairs] == [3, 3, 1]
    assert torch.equal(torch.cat(list(iter_batches(loader, 100))), x)
    with pytest.raises(ValueError, match="a DataLoader batches by itself"):
        iter_batches(loader, 2, limit=3)


def test_bad_input():
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        iter_batches(torch.zeros(2, 3, 2, 2), 0)
    with pytest.raises(TypeError, match="has no labels"):
        iter_batches(torch.zeros(2, 3, 2, 2), 2, with_labels=True)
    with pytest.raises(TypeError, match="got int"):
        iter_batches(3, 2)
