"""What a benchmark's figures depend on, recorded beside them: CPU, cores, load, library versions."""

from __future__ import annotations

import os
import platform
from datetime import datetime, timezone

import torch

import crate_edu


def machine_info(device: str | torch.device | None = None) -> dict:
    """Date, platform, CPU model and count, default torch threads, 1-minute load, library versions;
    with a CUDA ``device``, also the GPU's name."""
    import accelerate

    info = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads_default": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "accelerate": accelerate.__version__,
        "crate_edu": crate_edu.__version__,
    }
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        if names:
            info["cpu_model"] = names[0]
    except OSError:
        pass
    if hasattr(os, "getloadavg"):
        info["load_average_1min_at_start"] = round(os.getloadavg()[0], 2)
    if device is not None and torch.device(device).type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info
