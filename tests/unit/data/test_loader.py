"""Tests of the device-resident data path (:mod:`crate_edu.data.loader`): order, augmentation, training.

Everything runs on the CPU (the loader works on any device); ``data_on_device="yes"`` forces it there.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, Subset
from torchvision.transforms.v2 import functional as TF

from crate_edu.data import build_dataset, build_transform
from crate_edu.data.loader import (
    DeviceImageLoader,
    augment_batch,
    augmentation_seed,
    device_source,
    draw_augmentation,
)
from crate_edu.train import ConfigError, EpochSampler, check_config, load_checkpoint, train
from tests.unit.train.test_loop import run_two_cpu_processes, tiny_config

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


@pytest.fixture(autouse=True)
def _on_the_cpu(monkeypatch):
    """Runs compare CPU float results: a GPU, where there is one, is left out."""
    monkeypatch.setenv("ACCELERATE_USE_CPU", "1")


def test_epoch_sampler_depends_only_on_seed_and_epoch() -> None:
    a, b = EpochSampler(50, seed=3), EpochSampler(50, seed=3)
    torch.manual_seed(123)  # the global generator must not matter
    a.set_epoch(2)
    torch.manual_seed(456)
    b.set_epoch(2)
    assert list(a) == list(b)
    assert sorted(a) == list(range(50))
    b.set_epoch(3)
    assert list(a) != list(b)
    assert list(EpochSampler(50, seed=4)) != list(EpochSampler(50, seed=3))


def _stats() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor(CIFAR_MEAN).view(3, 1, 1), torch.tensor(CIFAR_STD).view(3, 1, 1)


def _index_loader(n: int, **kw) -> DeviceImageLoader:
    """A loader whose labels are the image indices, so that ``y`` shows the order."""
    images = torch.randint(
        0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    return DeviceImageLoader(images, torch.arange(n), mean=CIFAR_MEAN, std=CIFAR_STD, **kw)


class _Indices(torch.utils.data.Dataset):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


# ------------------------------------------------------------------------------------------ order


@pytest.mark.parametrize("nproc", [1, 2, 4])
def test_train_order_is_accelerates_split_batches_order(nproc: int) -> None:
    """Each process gets, batch after batch, exactly what Accelerate's prepared DataLoader gives it.

    ``prepare_data_loader`` with explicit ``num_processes`` / ``process_index`` builds the loader of
    one rank of a launched group without launching it (``BatchSamplerShard`` with split_batches).
    """
    from accelerate.data_loader import prepare_data_loader

    n, batch, seed = 103, 16, 5  # 6 full global batches of 16, 7 images left over
    length = (n // batch) * batch
    for rank in range(nproc):
        sampler = EpochSampler(n, seed, length=length)
        ref = DataLoader(_Indices(n), batch_size=batch, sampler=sampler, drop_last=True)
        ref = prepare_data_loader(ref, num_processes=nproc, process_index=rank, split_batches=True)
        mine = _index_loader(
            n, batch_size=batch, seed=seed, length=length, num_processes=nproc, process_index=rank
        )
        for epoch in (0, 3):
            ref.set_epoch(epoch)
            mine.set_epoch(epoch)
            expected = [b.tolist() for b in ref]
            got = [y.tolist() for _, y in mine]
            assert got == expected and len(mine) == len(expected) == n // batch
            assert all(len(b) == batch // nproc for b in got)
    # the union over the ranks of a step is the global batch of the one-process order
    one = _index_loader(n, batch_size=batch, seed=seed, length=length)
    one.set_epoch(3)
    sampler = EpochSampler(n, seed, length=length)
    sampler.set_epoch(3)
    assert torch.cat(one.global_batches()).tolist() == list(sampler)


@pytest.mark.parametrize("nproc", [1, 2])
def test_test_order_is_in_order_with_accelerates_padding(nproc: int) -> None:
    """Test split: every image in order, the last batch kept; under 2 processes padded like Accelerate."""
    from accelerate.data_loader import prepare_data_loader

    n, batch = 21, 8
    for rank in range(nproc):
        ref = DataLoader(_Indices(n), batch_size=batch, shuffle=False)
        ref = prepare_data_loader(ref, num_processes=nproc, process_index=rank, split_batches=True)
        mine = _index_loader(n, batch_size=batch, train=False, num_processes=nproc, process_index=rank)
        assert [y.tolist() for _, y in mine] == [b.tolist() for b in ref]
        assert mine.global_sizes == [8, 8, 5]  # what the evaluation keeps of each gathered batch
    if nproc == 1:
        assert [len(y) for _, y in mine] == [8, 8, 5]


# ----------------------------------------------------------------------------------- augmentation


def _torchvision_reference(img, top, left, flip, pad, mean, std) -> torch.Tensor:
    """One image through torchvision's functional ops, as RandomCrop(padding) + HorizontalFlip do."""
    S = img.shape[-1]
    y = TF.crop(TF.pad(img, [pad], fill=0), top, left, S, S)
    if flip:
        y = TF.horizontal_flip(y)
    y = TF.to_dtype(y, torch.float32, scale=True)
    return TF.normalize(y, list(mean), list(std))


@pytest.mark.parametrize("size", [32, 16])
def test_augment_batch_equals_torchvision_image_by_image(size: int) -> None:
    g = torch.Generator().manual_seed(1)
    B, pad = 48, size // 8
    images = torch.randint(0, 256, (B, 3, size, size), dtype=torch.uint8, generator=g)
    top = torch.randint(0, 2 * pad + 1, (B,), generator=g)
    left = torch.randint(0, 2 * pad + 1, (B,), generator=g)
    flip = torch.rand(B, generator=g) < 0.5
    top[:2], left[:2], flip[:2] = (
        torch.tensor([0, 2 * pad]),
        torch.tensor([2 * pad, 0]),
        torch.tensor([True, False]),
    )
    mean, std = _stats()
    out = augment_batch(images, top, left, flip, mean, std, pad)  # (B, 3, S, S)
    assert out.dtype == torch.float32 and out.shape == images.shape
    for b in range(B):
        ref = _torchvision_reference(
            images[b], int(top[b]), int(left[b]), bool(flip[b]), pad, CIFAR_MEAN, CIFAR_STD
        )
        assert torch.equal(out[b], ref), b  # bit for bit
    # the corner crops really reach into the zero padding: (0 - mean) / std there
    assert torch.equal(out[0, :, 0, -1], ((0 - mean) / std).flatten())


def test_augment_batch_reproduces_the_cpu_pipeline() -> None:
    """The CPU path's own 'cifar' transform (build_transform) lands on one of our candidate outputs."""
    S, pad = 16, 2
    tf = build_transform("cifar", True, S, CIFAR_MEAN, CIFAR_STD, native_size=S)
    img = torch.randint(0, 256, (3, S, S), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    grid = [(t, l, f) for t in range(2 * pad + 1) for l in range(2 * pad + 1) for f in (False, True)]  # noqa: E741
    top, left, flip = (torch.tensor(v) for v in zip(*grid, strict=True))
    candidates = augment_batch(img.expand(len(grid), -1, -1, -1), top, left, flip, *_stats(), pad)
    hits = set()
    for seed in range(12):
        torch.manual_seed(seed)
        x = tf(img).as_subclass(torch.Tensor)
        match = [k for k in range(len(grid)) if torch.equal(candidates[k], x)]
        assert match, seed  # bit-identical to one (offset, flip) combination
        hits.add(grid[match[0]][2])
    assert hits == {False, True}


def test_offsets_are_uniform_and_flips_half() -> None:
    n, pad = 90_000, 4
    g = torch.Generator().manual_seed(augmentation_seed(0, 0, 0))
    top, left, flip = draw_augmentation(n, "cifar", 32, g)
    for v in (top, left):
        counts = torch.bincount(v, minlength=2 * pad + 1).double()
        assert v.min() == 0 and v.max() == 2 * pad and len(counts) == 2 * pad + 1
        expected = n / (2 * pad + 1)
        chi2 = float(((counts - expected) ** 2 / expected).sum())
        assert chi2 < 31.8, counts  # 8 degrees of freedom: P(chi2 > 31.8) = 1e-4
    joint = torch.bincount(top * (2 * pad + 1) + left, minlength=(2 * pad + 1) ** 2).double()
    expected = n / (2 * pad + 1) ** 2
    assert float(((joint - expected) ** 2 / expected).sum()) < 140.0  # 80 dof: P(> 140) < 1e-4
    assert abs(flip.double().mean().item() - 0.5) < 0.008  # 4.8 standard deviations
    assert not draw_augmentation(1000, "shift", 32, g)[2].any()  # 'shift' never flips


def test_augmentation_is_a_function_of_seed_epoch_and_process() -> None:
    n = 64
    make = dict(batch_size=16, policy="cifar", seed=7)
    a, b = _index_loader(n, **make), _index_loader(n, **make)
    a.set_epoch(2)
    torch.manual_seed(123)  # the global generator must not matter
    first = [x.clone() for x, _ in a]
    torch.manual_seed(456)
    b.set_epoch(2)
    assert all(torch.equal(u, v) for u, v in zip(first, [x for x, _ in b], strict=True))
    assert all(torch.equal(u, v) for u, v in zip(first, [x for x, _ in a], strict=True))  # replays
    b.set_epoch(3)
    b.set_epoch(2)  # back to epoch 2 after another one: still the same draws (no carried state)
    assert all(torch.equal(u, v) for u, v in zip(first, [x for x, _ in b], strict=True))
    b.set_epoch(3)
    assert not torch.equal(torch.cat(first), torch.cat([x for x, _ in b]))
    assert len({augmentation_seed(7, e, r) for e in range(4) for r in range(4)}) == 16
    assert augmentation_seed(7, 2, 0) != augmentation_seed(8, 2, 0)


# ------------------------------------------------------------------------------------------ sources


def test_device_source_reads_subsets_and_matches_the_dataset_items() -> None:
    ds = build_dataset("digits", "test", augment="none")
    sub = Subset(Subset(ds, list(range(10, 200))), [5, 0, 77, 3])
    src = device_source(sub, train=False)
    assert src.policy == "none" and src.images.dtype == torch.uint8
    assert torch.equal(src.images, ds.images[[15, 10, 87, 13]])
    loader = DeviceImageLoader.from_source(src, train=False, batch_size=4)
    x, y = next(iter(loader))
    xs, ys = zip(*(sub[i] for i in range(4)), strict=True)
    assert torch.equal(x, torch.stack(xs)) and y.tolist() == list(ys)  # bit-identical to the items
    train_set = build_dataset("digits", "train", augment="cifar")
    assert device_source(train_set, train=True).policy == "cifar"
    assert (
        device_source(build_dataset("cluttered-digits", "test", samples_per_digit=1), train=False).policy
        == "none"
    )


@pytest.mark.parametrize(
    "make, match",
    [
        (
            lambda: build_dataset("digits", "train", augment="randaugment"),
            "'randaugment' has no device version",
        ),
        (lambda: _Indices(4), "does not hold its images in memory"),
    ],
)
def test_device_source_says_why_it_cannot(make, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        device_source(make(), train=True)


def test_device_source_refuses_to_resize() -> None:
    from crate_edu.data.base import TensorImageDataset

    ds = TensorImageDataset(
        torch.zeros(4, 3, 32, 32, dtype=torch.uint8), torch.zeros(4), mean=CIFAR_MEAN, std=CIFAR_STD,
        transform=build_transform("cifar", True, 64, CIFAR_MEAN, CIFAR_STD, native_size=32),
    )  # fmt: skip
    ds.augment, ds.image_size = "cifar", 64
    with pytest.raises(ValueError, match="stored at 32x32 px but the run uses 64 px"):
        device_source(ds, train=True)


# ------------------------------------------------------------------------------------------ training


def _weights(run) -> dict[str, torch.Tensor]:
    return load_checkpoint(run.checkpoint)["model"]


def test_fit_on_the_device_equals_the_dataloader_without_augmentation(tmp_path: Path, capsys) -> None:
    """Same order, same arithmetic: bit-identical weights and metrics; with grad-accum too."""
    cfg = tiny_config(epochs=2, limit_train=128, limit_test=64)
    loader = train(cfg.replace(data_on_device="no"), tmp_path / "loader")
    assert "data on cpu" not in capsys.readouterr().out
    device = train(cfg.replace(data_on_device="yes"), tmp_path / "device")
    assert "data on cpu: 128 train and 64 test images held there as uint8" in capsys.readouterr().out
    a, b = _weights(loader), _weights(device)
    assert all(torch.equal(a[k], b[k]) for k in a)
    keys = ("train_loss", "train_acc", "test_loss", "test_acc", "step")
    assert [[h[k] for k in keys] for h in loader.history] == [[h[k] for k in keys] for h in device.history]
    accum = train(cfg.replace(data_on_device="yes", grad_accum=4), tmp_path / "accum")
    assert accum.final["step"] == device.final["step"] == 2 * (128 // 32)
    c = _weights(accum)
    for k in a:
        torch.testing.assert_close(c[k], a[k], rtol=1e-5, atol=1e-5)
    capsys.readouterr()
    auto = train(cfg.replace(epochs=1, data_on_device="auto"), tmp_path / "auto")
    assert "data on" not in capsys.readouterr().out and auto.final["epoch"] == 1  # auto: off on a CPU


def test_resumed_run_on_the_device_replays_the_augmentation(tmp_path: Path) -> None:
    """2 epochs straight == 1 epoch, stop, resume, 1 epoch: bit-identical with crops, flips, dropout."""
    cfg = tiny_config(
        epochs=2, augment="cifar", data_on_device="yes", limit_train=128, limit_test=32,
        model_overrides={**tiny_config().model_overrides, "dropout": 0.1},
    )  # fmt: skip
    full = train(cfg, tmp_path / "full")

    def stop(record: dict) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "cut", on_epoch_end=stop)
    torch.manual_seed(999)  # the global generators are restored from the checkpoint
    resumed = train(out_dir=tmp_path / "cut", resume=True)
    a, b = _weights(full), _weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h["train_loss"] for h in full.history] == [h["train_loss"] for h in resumed.history]
    assert math.isfinite(full.final["test_loss"])
    # the augmentation changes the run (so the replay above is not trivially augmentation-free)
    plain = train(cfg.replace(epochs=1, augment="none"), tmp_path / "plain")
    assert plain.history[0]["train_loss"] != full.history[0]["train_loss"]


def test_bad_data_on_device_settings_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match="unknown data-on-device setting 'maybe'; choose one of: auto, yes, no"
    ):
        check_config(tiny_config(data_on_device="maybe"))
    cfg = tiny_config(epochs=1, limit_train=64, augment="randaugment", data_on_device="yes")
    with pytest.raises(ConfigError, match="randaugment.*--data-on-device no") as info:
        train(cfg, tmp_path / "r")
    assert "\n" not in str(info.value)
    train(tiny_config(epochs=1, limit_train=64, data_on_device="no"), tmp_path / "n")
    with pytest.raises(ConfigError, match="cannot change data-on-device"):  # not the same random draws
        train(
            tiny_config(epochs=2, data_on_device="yes"),
            tmp_path / "n",
            resume=True,
            explicit=["data_on_device"],
        )


def test_cli_flag() -> None:
    from crate_edu.cli import build_parser

    args = build_parser().parse_args(["train", "--data-on-device", "yes"])
    assert args.data_on_device == "yes"
    assert "data_on_device" not in vars(build_parser().parse_args(["train"]))  # the recipe decides
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--data-on-device", "maybe"])


def test_two_processes_on_the_device_equal_one_dataloader_process(tmp_path: Path) -> None:
    """torchrun, 2 CPU processes, data on the device == 1 process with the DataLoader.

    Each rank cuts its half of every global batch; the 100 test images (batches of 32) end in a
    padded batch whose padding the evaluation must drop (n = 100, not 128).
    """
    from crate_edu.train import read_jsonl

    cfg = tiny_config(epochs=1, limit_train=128, limit_test=100, data_on_device="no")
    single = train(cfg, tmp_path / "one")
    args = [
        "train", "--model", cfg.model, "--dataset", cfg.dataset, "--epochs", "1", "--batch-size", "32",
        "--optimizer", "adamw", "--lr", str(cfg.lr), "--weight-decay", str(cfg.weight_decay),
        "--warmup-epochs", "1", "--label-smoothing", "0.1", "--grad-clip", "1.0", "--augment", "none",
        "--limit-train", "128", "--limit-test", "100", "--threads", "1", "--no-progress",
        "--depth", "1", "--dim", "32", "--heads", "2", "--patch-size", "8", "--data-on-device", "yes",
        "--out", str(tmp_path / "two"),
    ]  # fmt: skip
    proc = run_two_cpu_processes(args)
    assert "128 train and 100 test images held there as uint8" in proc.stdout
    (two,) = read_jsonl(tmp_path / "two" / "metrics.jsonl")
    one = single.final
    for k in ("train_loss", "train_acc", "test_loss", "test_acc"):
        assert math.isclose(one[k], two[k], rel_tol=1e-5, abs_tol=1e-6), (k, one, two)
    a, b = _weights(single), load_checkpoint(tmp_path / "two")["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-5)


def test_a_checkpoint_from_before_the_setting_resumes_with_dataloaders(tmp_path: Path) -> None:
    from crate_edu.train import save_checkpoint

    run = train(tiny_config(epochs=1, limit_train=64, limit_test=32), tmp_path / "old")
    ckpt = load_checkpoint(run.checkpoint)
    del ckpt["config"]["data_on_device"]  # as written by a version without the field
    save_checkpoint(ckpt, run.checkpoint)
    with pytest.warns(UserWarning, match="stretched"):
        resumed = train(tiny_config(epochs=2), tmp_path / "old", resume=True, explicit=["epochs"])
    assert resumed.config.data_on_device == "no" and len(resumed.history) == 2


def test_epoch_generator_is_the_samplers_source() -> None:
    from crate_edu.data.loader import epoch_generator

    a, b = epoch_generator(3, 2), epoch_generator(3, 2)
    assert torch.equal(torch.rand(5, generator=a), torch.rand(5, generator=b))
    sampler = EpochSampler(40, seed=3, length=30)
    sampler.set_epoch(2)
    assert torch.equal(sampler.permutation(), torch.randperm(40, generator=epoch_generator(3, 2))[:30])
