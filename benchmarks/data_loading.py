"""Images/s of producing augmented CIFAR-sized training batches: DataLoader vs the device loader.

The data: 50,000 random uint8 images 3x32x32 (CIFAR-10's train split in size and type) with the
``'cifar'`` policy (zero-padded random crop, 4 pixels, + horizontal flip, then normalisation).

* ``DataLoader``: what ``crate-edu train`` uses without ``--data-on-device``: a
  ``TensorImageDataset`` whose torchvision v2 transform runs image by image, ``EpochSampler`` order,
  default collation, ``num_workers`` 0 or 2, then the copy to the device (pinned memory on CUDA);
* ``device``: :class:`crate_edu.data.loader.DeviceImageLoader`, the images on the device and the
  batch cut, cropped, flipped and normalised there in a few tensor operations.

A measurement iterates ``--batches`` batches after ``--warmup`` batches (so worker start-up is not
counted) and waits for the device at the end; the median over ``--rounds`` is reported.

    python benchmarks/data_loading.py                  # CPU, batch 128 and 256 (about a minute)
    python benchmarks/data_loading.py --device cuda    # on a GPU

Results are printed and written to ``benchmarks/results/data_loading.json`` (CPU) or
``data_loading_cuda.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from _machine import machine_info  # benchmarks/ is on sys.path when a script here runs
from torch.utils.data import DataLoader

from crate_edu.data import DeviceImageLoader, EpochSampler, TensorImageDataset, build_transform

RESULTS = Path(__file__).parent / "results"
MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def _images_per_s(batches, n_batches: int, warmup: int, device: torch.device) -> float:
    """Images per second over ``n_batches`` batches of the iterable ``batches`` after ``warmup``."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    it = iter(batches)
    for _ in range(warmup):
        next(it)
    sync()
    count = 0
    t0 = time.perf_counter()
    for _ in range(n_batches):
        x, y = next(it)
        x = x.to(device, non_blocking=True)  # no-op for the device loader
        y = y.to(device, non_blocking=True)
        count += x.shape[0]
    sync()
    return count / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--batch", type=int, nargs="+", default=[128, 256], help="batch sizes")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader worker counts")
    p.add_argument("--images", type=int, default=50_000)
    p.add_argument("--batches", type=int, default=20, help="timed batches per DataLoader measurement")
    p.add_argument("--device-batches", type=int, default=100, help="timed batches per device measurement")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads of the main process")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)

    info = machine_info(args.device)  # before the thread count is set: it records torch's default
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.images, 3, 32, 32), dtype=torch.uint8, generator=g)  # (N, 3, 32, 32)
    labels = torch.randint(0, 10, (args.images,), generator=g)  # (N,)
    transform = build_transform("cifar", True, 32, MEAN, STD, native_size=32)
    dataset = TensorImageDataset(images, labels, mean=MEAN, std=STD, transform=transform)

    machine = {**info, "device": str(device), "threads": args.threads}
    print(f"{machine.get('cpu_model', machine['processor'])}, {machine['cpu_count']} CPUs, device {device}")
    print(f"{'loader':<22} {'batch':>5} {'images/s':>10} {'us/image':>9} {'vs workers=0':>12}")
    rows = []
    for batch in args.batch:
        measured: dict[str, float] = {}
        for workers in args.workers:
            sampler = EpochSampler(args.images, seed=0)
            loader = DataLoader(
                dataset,
                batch_size=batch,
                sampler=sampler,
                drop_last=True,
                num_workers=workers,
                pin_memory=device.type == "cuda",
                persistent_workers=False,
            )
            rates = [_images_per_s(loader, args.batches, args.warmup, device) for _ in range(args.rounds)]
            measured[f"DataLoader workers={workers}"] = statistics.median(rates)
        on_device = DeviceImageLoader(
            images, labels, mean=MEAN, std=STD, batch_size=batch, policy="cifar", device=device
        )
        n_dev = min(args.device_batches, len(on_device) - args.warmup)
        rates = [_images_per_s(on_device, n_dev, args.warmup, device) for _ in range(args.rounds)]
        measured["device loader"] = statistics.median(rates)
        base = measured.get("DataLoader workers=0")
        for name, rate in measured.items():
            ratio = rate / base if base else float("nan")
            rows.append({"loader": name, "batch": batch, "images_per_s": rate, "speedup_vs_workers0": ratio})
            print(f"{name:<22} {batch:>5} {rate:>10.0f} {1e6 / rate:>9.1f} {ratio:>11.1f}x")
    out = args.out or RESULTS / (
        "data_loading.json" if device.type == "cpu" else f"data_loading_{device.type}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    settings = {k: v for k, v in vars(args).items() if k != "out"}
    out.write_text(json.dumps({"machine": machine, "settings": settings, "results": rows}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
