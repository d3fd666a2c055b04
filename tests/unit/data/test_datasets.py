"""Tests of crate_edu.data: loaders on fake datasets in the real on-disk formats, the augmentation
policies, the offline datasets, and the missing-data error. CPU only, no network."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from crate_edu.data import (
    POLICIES,
    ClutteredDigits,
    DatasetFileError,
    DatasetUnavailableError,
    build_dataset,
    build_transform,
    dataset_info,
    default_data_dir,
    fetch_dataset,
    imagenet100_classes,
    list_datasets,
    synthetic,
)
from tests.support.fake_datasets import write_cifar, write_flowers, write_image_folder, write_pets

IMAGENETTE_WNIDS = [
    "n01440764", "n02102040", "n02979186", "n03000684", "n03028079",
    "n03394916", "n03417042", "n03425413", "n03445777", "n03888257",
]  # fmt: skip


def unnormalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    """float (3, H, W) normalised -> [0, 1] intensities."""
    return x * torch.tensor(std).view(3, 1, 1) + torch.tensor(mean).view(3, 1, 1)


# --------------------------------------------------------------------------------------------------
# registry


def test_registry_names_and_infos():
    assert list_datasets() == [
        "cifar10", "cifar100", "oxford-pets", "flowers102", "imagenette",
        "imagenet", "imagenet21k", "imagenet-100", "digits", "cluttered-digits",
    ]  # fmt: skip
    expected_classes = {
        "cifar10": 10, "cifar100": 100, "oxford-pets": 37, "flowers102": 102, "imagenette": 10,
        "imagenet": 1000, "imagenet21k": 19167, "imagenet-100": 100, "digits": 10, "cluttered-digits": 10,
    }  # fmt: skip
    for name in list_datasets():
        info = dataset_info(name)
        assert info.name == name and info.num_classes == expected_classes[name]
        assert len(info.mean) == 3 and len(info.std) == 3 and min(info.std) > 0
        assert info.default_augment in POLICIES
        if info.classes is not None:
            assert len(info.classes) == info.num_classes
    with pytest.raises(dataclasses.FrozenInstanceError):
        dataset_info("cifar10").num_classes = 3
    assert dataset_info("imagenet").mean == (0.485, 0.456, 0.406)  # official main.py / finetune.py
    assert not dataset_info("imagenet").downloadable and dataset_info("cifar10").downloadable


def test_bad_arguments_name_the_choices():
    with pytest.raises(ValueError, match="cifar10.*digits"):
        build_dataset("mnist")
    with pytest.raises(ValueError, match="randaugment"):
        build_dataset("digits", augment="autoaugment")
    with pytest.raises(ValueError, match="'train' or 'test'"):
        build_dataset("digits", split="validation")
    with pytest.raises(ValueError, match="unknown option.*size.*takes: none"):
        build_dataset("digits", size="160px")
    with pytest.raises(ValueError, match="Imagenette size.*160px"):
        build_dataset("imagenette", size="64px")


def test_default_data_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("CRATE_EDU_DATA", str(tmp_path))
    assert default_data_dir() == tmp_path
    monkeypatch.delenv("CRATE_EDU_DATA")
    assert default_data_dir().parts[-3:] == (".cache", "crate_edu", "data")


# --------------------------------------------------------------------------------------------------
# CIFAR python pickles


@pytest.mark.parametrize("kind", ["cifar10", "cifar100"])
def test_cifar_pickles(tmp_path, kind):
    fake = write_cifar(tmp_path, kind)
    info = dataset_info(kind)
    for split in ("train", "test"):
        ds = build_dataset(kind, split, data_dir=tmp_path, augment="none")
        images, labels = fake[split]
        assert len(ds) == len(labels) == (20 if kind == "cifar10" and split == "train" else 4)
        assert ds.classes == fake["classes"]
        for i in (0, len(ds) - 1):
            x, y = ds[i]
            assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y == labels[i]
            # normalised with the dataset's statistics, pixel for pixel the image that was written
            expected = torch.from_numpy(images[i]).permute(2, 0, 1).float() / 255
            torch.testing.assert_close(unnormalize(x, info.mean, info.std), expected, atol=1e-6, rtol=0)
    # pointing --data-dir at the dataset folder itself works too
    folder = tmp_path / ("cifar-10-batches-py" if kind == "cifar10" else "cifar-100-python")
    assert len(build_dataset(kind, "test", data_dir=folder)) == 4


def test_cifar_reader_agrees_with_torchvision(tmp_path, monkeypatch):
    """torchvision reads the same fake files (with its MD5 check switched off) to the same pixels."""
    import torchvision.datasets.cifar as tv_cifar

    write_cifar(tmp_path, "cifar10")
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *a, **k: True)
    tv = tv_cifar.CIFAR10(str(tmp_path), train=True)
    ours = build_dataset("cifar10", "train", data_dir=tmp_path, augment="none")
    mean, std = dataset_info("cifar10").mean, dataset_info("cifar10").std
    for i in (0, 7, 19):
        img, label = tv[i]
        x, y = ours[i]
        assert y == label
        expected = torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255
        torch.testing.assert_close(unnormalize(x, mean, std), expected, atol=1e-6, rtol=0)


def test_cifar_default_augment_and_imagenet_normalisation(tmp_path):
    write_cifar(tmp_path, "cifar10")
    torch.manual_seed(0)
    train = build_dataset("cifar10", "train", data_dir=tmp_path)  # default: RandomCrop(32, 4) + flip
    outs = torch.stack([train[0][0] for _ in range(8)])
    assert outs.shape == (8, 3, 32, 32) and not all(torch.equal(outs[0], o) for o in outs[1:])
    # fine-tuning recipe: above 32 px the default is RandAugment, and finetune.py's ImageNet stats
    big = build_dataset("cifar10", "test", data_dir=tmp_path, image_size=64, normalize="imagenet")
    x, _ = big[0]
    assert x.shape == (3, 64, 64)
    raw = build_dataset("cifar10", "test", data_dir=tmp_path, normalize=((0, 0, 0), (1, 1, 1)))[0][0]
    mean_imnet = torch.tensor([0.485, 0.456, 0.406])
    std_imnet = torch.tensor([0.229, 0.224, 0.225])
    # a square resize keeps the channel means (up to interpolation): compare the normalised means
    torch.testing.assert_close(x.mean((1, 2)), (raw.mean((1, 2)) - mean_imnet) / std_imnet, atol=0.02, rtol=0)


# --------------------------------------------------------------------------------------------------
# augmentation policies


@pytest.mark.parametrize("policy", POLICIES)
def test_policies_output_shape_and_determinism(policy):
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, size=(45, 70, 3), dtype=np.uint8))  # H 45, W 70
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    torch.manual_seed(0)
    for train in (True, False):
        t = build_transform(policy, train, 40, mean, std)
        a, b = t(img), t(img)
        assert a.shape == (3, 40, 40) and a.dtype == torch.float32
        if not train:
            torch.testing.assert_close(a, b)  # test transforms are deterministic
        elif policy != "none":
            assert not torch.equal(a, b)  # train transforms are random


def test_imagenet_test_transform_is_resize_then_centre_crop():
    # main.py: Resize(256) + CenterCrop(224); here at 64 px: Resize(73) + CenterCrop(64)
    x = np.zeros((100, 200, 3), dtype=np.uint8)
    x[:, 100:] = 255  # left half black, right half white
    out = build_transform("imagenet", False, 64, (0, 0, 0), (1, 1, 1))(Image.fromarray(x))
    # shorter side 100 -> 73, so the width becomes 146 and the centre 64 columns straddle the edge
    assert out.shape == (3, 64, 64)
    assert out[:, :, :20].max() < 0.05 and out[:, :, -20:].min() > 0.95


# --------------------------------------------------------------------------------------------------
# ImageFolder: imagenet and imagenet-100


def test_imagenet_image_folder(tmp_path):
    synsets = ["n01440764", "n01443537", "n09999999"]
    for split in ("train", "val"):
        write_image_folder(tmp_path / split, synsets, per_class=2)
    ds = build_dataset("imagenet", "train", data_dir=tmp_path, image_size=32)
    assert len(ds) == 6 and ds.classes == synsets
    x, y = ds[5]
    assert x.shape == (3, 32, 32) and y == 2
    # also found under DIR/imagenet/
    nested = tmp_path / "nested"
    write_image_folder(nested / "imagenet" / "val", synsets)
    assert len(build_dataset("imagenet", "test", data_dir=nested, image_size=32)) == 3


def test_imagenet100_class_mapping(tmp_path):
    wnids = imagenet100_classes()
    assert len(wnids) == 100 and wnids == sorted(wnids) and len(set(wnids)) == 100
    assert dataset_info("imagenet-100").classes == tuple(wnids)
    extra = ["n00000001", "n99999999"]  # not in the list: must be left out
    write_image_folder(tmp_path / "val", [*wnids, *extra], ext=".png")
    ds = build_dataset("imagenet-100", "test", data_dir=tmp_path, image_size=16)
    assert len(ds) == 100 and ds.classes == wnids
    for k in (0, 41, 99):
        path, label = ds.samples[k]
        assert label == k and f"/{wnids[k]}/" in path
    assert ds[99][0].shape == (3, 16, 16)


def test_imagenet100_missing_classes(tmp_path):
    write_image_folder(tmp_path / "train", imagenet100_classes()[:3])
    with pytest.raises(DatasetUnavailableError, match="97 of its 100 class folders are missing"):
        build_dataset("imagenet-100", "train", data_dir=tmp_path)


# --------------------------------------------------------------------------------------------------
# Imagenette, Pets, Flowers


def test_imagenette_layout(tmp_path):
    for split in ("train", "val"):
        write_image_folder(tmp_path / "imagenette2-160" / split, IMAGENETTE_WNIDS)
    ds = build_dataset("imagenette", "train", data_dir=tmp_path)
    assert len(ds) == 10
    x, y = ds[3]
    assert x.shape == (3, 160, 160) and y == 3
    assert len(build_dataset("imagenette", "test", data_dir=tmp_path, image_size=64)) == 10
    with pytest.raises(DatasetUnavailableError, match="imagenette2-320"):
        build_dataset("imagenette", "train", data_dir=tmp_path, size="320px")


def test_oxford_pets_layout(tmp_path):
    sizes = write_pets(tmp_path)
    train = build_dataset("oxford-pets", "train", data_dir=tmp_path, image_size=32, augment="none")
    test = build_dataset("oxford-pets", "test", data_dir=tmp_path, image_size=32)
    assert len(train) == sizes["trainval"] and len(test) == sizes["test"]
    assert [train[i][1] for i in range(len(train))] == [0, 0, 1, 1, 2, 2]
    assert train[0][0].shape == (3, 32, 32)


def test_flowers102_layout(tmp_path):
    fake = write_flowers(tmp_path)
    train = build_dataset("flowers102", "train", data_dir=tmp_path, image_size=32)
    assert train.targets == [int(fake["labels"][i - 1]) for i in fake["trnid"]] == [0, 1, 2]
    trainval = build_dataset("flowers102", "train", data_dir=tmp_path, image_size=32, include_val=True)
    assert len(trainval) == 6
    test = build_dataset("flowers102", "test", data_dir=tmp_path, image_size=32)
    assert test.targets == [101, 0, 1]
    x, y = test[0]
    assert x.shape == (3, 32, 32) and y == 101


# --------------------------------------------------------------------------------------------------
# missing data


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "oxford-pets", "flowers102", "imagenette"])
def test_missing_dataset_message(tmp_path, name):
    with pytest.raises(DatasetUnavailableError) as err:
        build_dataset(name, "train", data_dir=tmp_path / "nowhere")
    msg = str(err.value)
    assert str(tmp_path / "nowhere") in msg and f"crate-edu fetch {name}" in msg and "--data-dir" in msg
    assert "\n" not in msg


@pytest.mark.parametrize("name", ["imagenet", "imagenet-100"])
def test_imagenet_cannot_be_fetched(tmp_path, name):
    with pytest.raises(DatasetUnavailableError, match=r"image-net\.org.*DIR/train/<wnid>"):
        fetch_dataset(name, tmp_path)
    with pytest.raises(DatasetUnavailableError, match=str(tmp_path / "train")):
        build_dataset(name, data_dir=tmp_path)


def test_failed_download_is_one_clear_error(tmp_path, monkeypatch):
    from torchvision.datasets import utils

    def offline(*args, **kwargs):
        raise OSError("[Errno 101] Network is unreachable")

    monkeypatch.setattr(utils, "download_and_extract_archive", offline)
    with pytest.raises(
        DatasetUnavailableError,
        match=r"download into .* failed: OSError: \[Errno 101\] Network is unreachable",
    ) as err:
        build_dataset("cifar10", data_dir=tmp_path, download=True)
    assert err.value.__suppress_context__ and "crate-edu fetch cifar10" in str(err.value)


def test_fetch_offline_datasets_is_a_no_op(tmp_path):
    assert fetch_dataset("digits", tmp_path) == tmp_path
    assert not any(tmp_path.iterdir())


# --------------------------------------------------------------------------------------------------
# digits


def test_digits_split_sizes_and_stratification():
    from sklearn.datasets import load_digits

    train, test = synthetic.digits_split_indices("train"), synthetic.digits_split_indices("test")
    assert len(train) == 1438 and len(test) == 359
    assert np.union1d(train, test).tolist() == list(range(1797)) and not np.intersect1d(train, test).size
    labels = load_digits().target
    per_class = np.bincount(labels, minlength=10)
    np.testing.assert_array_equal(np.bincount(labels[test], minlength=10), np.round(0.2 * per_class))
    assert test[:6].tolist() == [3, 7, 13, 19, 36, 38]  # the fixed split never changes


def test_digits_items_and_statistics():
    train = build_dataset("digits", "train")
    test = build_dataset("digits", "test")
    assert len(train) == 1438 and len(test) == 359
    x, y = train[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and isinstance(y, int)
    raw = train.images.float() / 255  # (N, 3, 32, 32)
    torch.testing.assert_close(raw.mean((0, 2, 3)), torch.tensor(synthetic.DIGITS_MEAN), atol=1e-4, rtol=0)
    torch.testing.assert_close(raw.std((0, 2, 3)), torch.tensor(synthetic.DIGITS_STD), atol=1e-4, rtol=0)
    # normalised train images have mean 0 and std 1 per channel
    xs = torch.stack([train[i][0] for i in range(0, 1438, 7)])
    assert abs(xs.mean().item()) < 0.05 and abs(xs.std().item() - 1) < 0.05
    # the labels are scikit-learn's and the images its digits, upsampled
    from sklearn.datasets import load_digits

    d = load_digits()
    idx = synthetic.digits_split_indices("test")
    assert test.targets == d.target[idx].tolist()
    small = torch.nn.functional.avg_pool2d(test.images[:, :1].float() / 255, 4)[:, 0]  # (N, 8, 8)
    assert (
        torch.corrcoef(torch.stack([small.flatten(), torch.tensor(d.images[idx] / 16).flatten()]))[0, 1]
        > 0.95
    )


def test_digits_other_size_and_shift_policy():
    ds = build_dataset("digits", "train", image_size=48, augment="shift")
    x, _ = ds[0]
    assert x.shape == (3, 48, 48)


# --------------------------------------------------------------------------------------------------
# cluttered-digits


@pytest.fixture(scope="module")
def cluttered_default():
    return build_dataset("cluttered-digits", "train")


def test_cluttered_default_set(cluttered_default):
    ds = cluttered_default
    n = 32 * 1438
    assert len(ds) == n and ds.images.shape == (n, 3, 32, 32) and ds.masks.shape == (n, 32, 32)
    assert ds.masks.dtype == torch.bool
    area = ds.masks.float().mean((1, 2))
    assert area.min() > 0.01 and 0.05 < area.mean() < 0.3  # every image has a digit, of moderate size
    raw = ds.images.float() / 255
    torch.testing.assert_close(raw.mean((0, 2, 3)), torch.tensor(synthetic.CLUTTERED_MEAN), atol=2e-3, rtol=0)
    torch.testing.assert_close(raw.std((0, 2, 3)), torch.tensor(synthetic.CLUTTERED_STD), atol=2e-3, rtol=0)
    assert (
        torch.bincount(ds.labels).tolist()
        == (32 * torch.bincount(torch.tensor(build_dataset("digits").targets))).tolist()
    )
    x, y = ds[0]
    assert x.shape == (3, 32, 32) and y == int(ds.labels[0])
    x2, y2, m = ds.get(0, with_mask=True)
    assert torch.equal(x, x2) and torch.equal(m, ds.masks[0])


def test_cluttered_is_deterministic_given_seed():
    a = ClutteredDigits("test", samples_per_digit=1, seed=3)
    b = ClutteredDigits("test", samples_per_digit=1, seed=3)
    c = ClutteredDigits("test", samples_per_digit=1, seed=4)
    assert (
        torch.equal(a.images, b.images) and torch.equal(a.masks, b.masks) and torch.equal(a.labels, b.labels)
    )
    assert not torch.equal(a.images, c.images)
    # the test split uses the test digits only
    assert set(a.source_index.tolist()) == set(synthetic.digits_split_indices("test").tolist())


def test_cluttered_mask_marks_the_digit():
    """On a flat background, mask pixels differ from it by >= half the contrast; far pixels are background."""
    ds = ClutteredDigits("test", samples_per_digit=1, texture_contrast=0.0, fragments=0, min_contrast=0.4)
    luma_w = torch.tensor([0.299, 0.587, 0.114])
    img = ds.images.float() / 255  # (N, 3, S, S)
    luma = torch.einsum("nchw,c->nhw", img, luma_w)
    # faint strokes (alpha < 0.5) reach at most two source pixels (<= 7 px here) beyond the mask
    near = torch.nn.functional.max_pool2d(ds.masks[:, None].float(), 15, 1, 7)[:, 0] > 0
    checked = 0
    for i in range(0, len(ds), 5):
        colours, counts = img[i].flatten(1).T.unique(dim=0, return_counts=True)
        bg = colours[counts.argmax()]  # (3,): the flat background colour, the most frequent one
        assert counts.max() >= 0.3 * 32 * 32
        far = img[i][:, ~near[i]]  # (3, K)
        if far.shape[1]:
            assert (far - bg[:, None]).abs().max() <= 1 / 255 + 1e-6
            checked += 1
        diff = (luma[i][ds.masks[i]] - (bg @ luma_w)).abs()
        assert diff.min() >= 0.5 * 0.4 - 2 / 255
    assert checked > 10


def test_cluttered_mask_follows_augmentation():
    ds = build_dataset("cluttered-digits", "train", augment="shift", samples_per_digit=1)
    base = ClutteredDigits("train", samples_per_digit=1)
    torch.manual_seed(0)
    for i in range(5):
        x, _, m = ds.get(i, with_mask=True)
        img = (unnormalize(x, ds.mean, ds.std) * 255).round()
        orig, orig_mask = base.images[i].float(), base.masks[i]
        pad_img = torch.nn.functional.pad(orig, (4, 4, 4, 4))
        pad_mask = torch.nn.functional.pad(orig_mask, (4, 4, 4, 4))
        found = [
            (dy, dx)
            for dy in range(9)
            for dx in range(9)
            if torch.allclose(pad_img[:, dy : dy + 32, dx : dx + 32], img, atol=1.0)
        ]
        assert found, "the augmented image is not a shifted copy of the original"
        dy, dx = found[0]
        assert torch.equal(m, pad_mask[dy : dy + 32, dx : dx + 32])


def test_cluttered_larger_images_and_settings():
    ds = build_dataset("cluttered-digits", "test", image_size=64, samples_per_digit=1, clutter=1.0)
    assert ds.images.shape == (359, 3, 64, 64) and ds.masks.shape == (359, 64, 64)
    assert ds.settings == synthetic.clutter_settings(1.0)
    assert ds[0][0].shape == (3, 64, 64)
    with pytest.raises(ValueError, match="clutter"):
        ClutteredDigits("test", clutter=1.5)


def test_dataloader_batches():
    loader = torch.utils.data.DataLoader(build_dataset("digits", "test"), batch_size=50)
    x, y = next(iter(loader))
    assert x.shape == (50, 3, 32, 32) and y.dtype == torch.int64


# --------------------------------------------------------------------------------------------------
# ImageNet-21K (Winter 2021 release)

WNIDS_21K = ["n00004475", "n00005787", "n01440764"]


def test_imagenet21k_release_tree_holds_out_a_test_split(tmp_path):
    """winter21_whole/<wnid>/*.JPEG: the last min(10, n // 10) files of each class are the test split."""
    write_image_folder(tmp_path / "winter21_whole", WNIDS_21K[:2], per_class=12)
    write_image_folder(tmp_path / "winter21_whole", WNIDS_21K[2:], per_class=5)  # too few to hold out
    (tmp_path / "winter21_whole" / "n00004475" / "notes.txt").write_text("not an image")
    train = build_dataset("imagenet21k", "train", data_dir=tmp_path, image_size=16)
    test = build_dataset("imagenet21k", "test", data_dir=tmp_path, image_size=16)
    assert train.classes == test.classes == WNIDS_21K
    assert len(train) == 11 + 11 + 5 and len(test) == 2 and test.targets == [0, 1]
    assert not {p.name for p in train.paths} & {p.name for p in test.paths if p.parent.name == "n00004475"}
    assert test.paths[0].name == "img_9.JPEG"  # the last file by sorted name (img_10, img_11, ..., img_9)
    x, y = train[len(train) - 1]
    assert x.shape == (3, 16, 16) and y == 2
    assert dataset_info("imagenet21k").num_classes == 19167 and dataset_info("imagenet21k").image_size == 224
    # pointing --data-dir at the release folder itself works too
    assert len(build_dataset("imagenet21k", "test", data_dir=tmp_path / "winter21_whole", image_size=16)) == 2


@pytest.mark.parametrize(
    "layout", [("imagenet21k", "train", "val"), ("", "imagenet21k_train", "imagenet21k_val")]
)
def test_imagenet21k_split_trees(tmp_path, layout):
    """DIR/imagenet21k/{train,val}/<wnid>/ and ImageNet-21K-P's imagenet21k_{train,val}/ are read as is."""
    base, train_dir, val_dir = layout
    write_image_folder(tmp_path / base / train_dir, WNIDS_21K, per_class=2)
    write_image_folder(tmp_path / base / val_dir, WNIDS_21K[1:], per_class=1)
    train = build_dataset("imagenet21k", "train", data_dir=tmp_path, image_size=16)
    test = build_dataset("imagenet21k", "test", data_dir=tmp_path, image_size=16)
    assert len(train) == 6 and train.classes == WNIDS_21K
    assert test.targets == [1, 2]  # labels of the training classes, not re-numbered


def test_imagenet21k_class_list_from_a_file_and_its_checks(tmp_path):
    root = tmp_path / "imagenet21k"
    write_image_folder(root / "train", WNIDS_21K, per_class=1)
    write_image_folder(root / "val", ["n09999999"], per_class=1)
    (root / "classes.txt").write_text("\n".join(reversed(WNIDS_21K)) + "\n")
    train = build_dataset("imagenet21k", "train", data_dir=tmp_path, image_size=16)
    assert train.classes == list(reversed(WNIDS_21K)) and train.targets == [2, 1, 0]
    with pytest.raises(DatasetFileError, match="n09999999 is a class that"):
        build_dataset("imagenet21k", "test", data_dir=tmp_path, image_size=16)
    (root / "classes.txt").write_text("\n".join(f"n{k:08d}" for k in range(21841)))
    with pytest.raises(DatasetFileError, match="21,841 classes, more than the 19,167.*fall11") as err:
        build_dataset("imagenet21k", "train", data_dir=tmp_path)
    assert "\n" not in str(err.value)


def test_imagenet21k_missing_says_where_it_looked_and_how_to_get_it(tmp_path):
    with pytest.raises(DatasetUnavailableError) as err:
        build_dataset("imagenet21k", "train", data_dir=tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and str(tmp_path / "winter21_whole") in msg
    assert "image-net.org" in msg and "Winter 2021" in msg and "--data-dir" in msg
    (tmp_path / "winter21_whole").mkdir()
    (tmp_path / "winter21_whole" / "n00004475.tar").write_bytes(b"")
    with pytest.raises(DatasetUnavailableError, match="per-class tars, not yet extracted"):
        build_dataset("imagenet21k", "train", data_dir=tmp_path)
    with pytest.raises(DatasetUnavailableError, match="cannot be fetched automatically.*winter21_whole"):
        fetch_dataset("imagenet21k", tmp_path)
    # an ImageNet-1K tree in DIR/train is not taken for ImageNet-21K
    write_image_folder(tmp_path / "elsewhere" / "train", WNIDS_21K)
    with pytest.raises(DatasetUnavailableError, match="not found"):
        build_dataset("imagenet21k", "train", data_dir=tmp_path / "elsewhere")


# --------------------------------------------------------------------------------------------------
# RandAugment as the official CRATE-α fine-tuning draws it


def test_timm_randaugment_operations_at_their_levels():
    from crate_edu.data.transforms import TIMM_FILL, TIMM_OPS, TimmRandAugment, apply_timm_op

    assert len(TIMM_OPS) == 15 and "Cutout" not in TIMM_OPS
    img = torch.arange(256, dtype=torch.uint8).view(1, 16, 16).expand(3, 16, 16).contiguous()
    x = img.to(torch.int16)
    # posterize keeps 4 - int(0.4 m) bits: m = 5 -> 2 bits
    assert torch.equal(apply_timm_op(img, "Posterize", 5.0), (x // 64 * 64).to(torch.uint8))
    # solarize inverts above 256 - int(25.6 m): m = 9 -> 26
    assert torch.equal(apply_timm_op(img, "Solarize", 9.0), torch.where(x < 26, x, 255 - x).to(torch.uint8))
    # solarize-add adds min(128, int(11 m)) below 128: m = 9 -> 99
    added = torch.where(x < 128, (x + 99).clamp(max=255), x).to(torch.uint8)
    assert torch.equal(apply_timm_op(img, "SolarizeAdd", 9.0), added)
    for op in ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY", "Brightness", "Color"):
        assert torch.equal(apply_timm_op(img, op, 0.0, 16), img), op  # level 0 changes nothing
    moved = apply_timm_op(img, "TranslateX", 10.0, 16)  # 45 % of 16 px = 7.2 px, uncovered -> fill
    filled = (moved.permute(1, 2, 0) == torch.tensor(TIMM_FILL, dtype=torch.uint8)).all(-1)
    assert 6 * 16 <= int(filled.sum()) <= 8 * 16
    torch.manual_seed(0)
    aug = TimmRandAugment(2, 9, image_size=16)
    photo = torch.randint(30, 200, (3, 16, 16), dtype=torch.uint8)  # every op changes it
    changed = sum(not torch.equal(aug(photo), photo) for _ in range(400))
    assert 0.68 * 400 < changed < 0.82 * 400  # two ops, each applied with probability 1/2: 3/4
    t = build_transform("imagenet-randaugment", True, 32, (0.5,) * 3, (0.25,) * 3, magnitude=3)
    assert any(isinstance(step, TimmRandAugment) and step.magnitude == 3 for step in t.transforms)
