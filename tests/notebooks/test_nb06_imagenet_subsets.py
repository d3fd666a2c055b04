"""Tests behind the checks of notebooks/06_train_imagenet_subsets, on other sizes than the notebook's.

Covered elsewhere: forward_flops against torch's counter (tests/unit/evaluation/test_flops.py), the throughput
helpers (tests/unit/evaluation/test_throughput.py), reading launch commands (tests/unit/test_launch.py),
the multi-process trainer (tests/unit/train/test_loop.py).
"""

from __future__ import annotations

import pytest
import torch
from PIL import Image

import crate_edu
from crate_edu.data import DatasetUnavailableError, build_dataset, dataset_info, imagenet100_classes
from crate_edu.evaluation import forward_flops
from crate_edu.notebook import read_launch_command
from crate_edu.train import RECIPES, ConfigError


def _mini_imagenet(root, wnids, extra=()):
    for w in list(wnids) + list(extra):
        (root / "val" / w).mkdir(parents=True)
        Image.new("RGB", (20, 16), (30, 60, 90)).save(root / "val" / w / f"{w}_0.JPEG")


def test_imagenet100_from_a_full_tree_keeps_only_the_listed_classes(tmp_path):
    wnids = imagenet100_classes()
    assert len(set(wnids)) == 100 and wnids == sorted(wnids)
    extra = ["n00000000", "n99999999"]
    _mini_imagenet(tmp_path, wnids, extra)
    ds = build_dataset("imagenet-100", "test", data_dir=tmp_path)
    assert ds.classes == wnids and len(ds) == 100
    assert [label for _, label in ds.samples] == list(range(100))
    x, y = ds[5]
    assert x.shape == (3, 224, 224) and y == 5


def test_imagenet100_with_missing_classes_says_so(tmp_path):
    _mini_imagenet(tmp_path, imagenet100_classes()[:10])
    with pytest.raises(DatasetUnavailableError, match="90 of its 100 class folders are missing"):
        build_dataset("imagenet-100", "test", data_dir=tmp_path)


def test_token_counts_and_cost_ratio():
    with torch.device("meta"):
        m160 = crate_edu.create_model("crate_tiny", image_size=160, num_classes=10)
        m224 = crate_edu.create_model("crate_tiny", num_classes=10)
        m32 = crate_edu.create_model("crate_tiny_cifar")
        m8 = crate_edu.create_model("crate_tiny", patch_size=8)
    assert (m160.config.num_patches, m224.config.num_patches) == (100, 196)
    assert 3.5 < forward_flops(m224) / forward_flops(m32) < 3.7
    assert round(forward_flops(m8) / 1e9, 1) == 22.6


def test_number_formats_and_loss_scaling():
    bf, hf, f32 = torch.finfo(torch.bfloat16), torch.finfo(torch.float16), torch.finfo(torch.float32)
    assert bf.tiny == f32.tiny and bf.max > 3e38 and bf.eps == 2**-7
    assert hf.max == 65504 and hf.eps == 2**-10
    assert torch.isinf(torch.tensor(65520.0).half())  # rounds up past the largest fp16
    for g in (1e-8, 2e-8, 5e-9):
        t = torch.tensor(g)
        assert t.half().item() == 0.0 and t.bfloat16().item() != 0.0
        assert abs((t * 2.0**16).half().float().item() / 2.0**16 - g) <= g * 2**-10
    x = torch.rand(50_000, generator=torch.Generator().manual_seed(0)) * 100 + 1e-3
    assert ((x.bfloat16().float() - x).abs() / x).max().item() <= 2**-8


def test_bf16_autocast_changes_crate_logits_little():
    torch.manual_seed(1)
    m = crate_edu.create_model("crate_tiny", depth=3, num_classes=10).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        ref = m(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = m(x)
    assert low.dtype == torch.bfloat16
    assert ((low.float() - ref).norm() / ref.norm()).item() < 0.05


@pytest.mark.parametrize(
    ("cmd", "nproc", "dataset", "batch", "accum"),
    [
        (
            "torchrun --standalone --nproc_per_node 8 -m crate_edu train --recipe imagenet "
            "--dataset imagenet-100 --data-dir /data/imagenet --out runs/in100",
            8,
            "imagenet-100",
            2048,
            1,
        ),
        (
            "crate-edu train --recipe imagenet --dataset imagenet-100 --data-dir /data/imagenet "
            "--grad-accum 8",
            1,
            "imagenet-100",
            2048,
            8,
        ),
        (
            "accelerate launch --multi_gpu --num_processes 4 --mixed_precision bf16 -m crate_edu train "
            "--recipe imagenette --out runs/x",
            4,
            "imagenette",
            256,
            1,
        ),
    ],
)
def test_launch_commands_parse_to_the_stated_runs(cmd, nproc, dataset, batch, accum):
    run = read_launch_command(cmd)
    cfg = run.config
    assert (run.processes, cfg.dataset, cfg.batch_size, cfg.grad_accum) == (nproc, dataset, batch, accum)
    assert cfg.batch_size % (nproc * cfg.grad_accum) == 0
    assert run.images_per_pass * nproc * accum == batch


def test_bad_command_line_is_rejected():
    with pytest.raises(ConfigError, match="--grad-accum: invalid int value: 'eight'"):
        read_launch_command("crate-edu train --grad-accum eight")


def test_imagenet100_info():
    info = dataset_info("imagenet-100")
    assert info.num_classes == 100 and RECIPES["imagenet"].image_size == 224
