"""ReduNet on the official 2-D and 3-D toy mixtures: ΔR by layer and held-out accuracy.

The setting of the official notebooks ``examples/gaussian2d.ipynb`` / ``gaussian3d.ipynb``
(docs/notes/tost_redunet_official_code.md, §4.4): configuration 1 (two classes around (1, 0) and
(0, 1) on the circle; three around the unit axes on the sphere), noise 0.1, 100 training and 100
test samples per class drawn one after the other from one numpy stream
(:func:`crate_edu.coding_rate.redunet_mixture`), 200 layers, η = 0.5, eps = 0.1 (the official ε²),
λ = 200. The network is built forward on the training set (:func:`crate_edu.models.build_redunet`;
no back-propagation) in two ways: with the estimated memberships as the official ``init`` does
(``estimated``) and with the labels (``true``: projected gradient ascent on ΔR). Then:

- the training features' ΔR, R and R^c by layer (true labels, ε = √eps), and the test features'
  ΔR by layer (the test set through :meth:`ReduNet.forward`, scored with its labels);
- held-out accuracy of three classifiers: the last layer's estimated membership argmax_j π̂_j(z)
  (:meth:`ReduNet.predict`), the nearest class subspace on the output features (each class's top
  ``r`` principal directions of its training features, r = 1; a test sample goes to the class
  whose subspace keeps most of its norm), and the same nearest-subspace rule on the inputs.

ΔR is compared with ``ideal_delta_r``, its value when every class is collapsed onto its own axis
(K ≤ d orthogonal directions), the largest that unit-norm features with these class sizes reach.
ReduNet's features are only defined up to sign on a subspace: ‖C_j z‖ = ‖C_j (−z)‖, so classes
on one line through the origin (2-D configuration 8 has two antipodal pairs) cannot be told
apart by the estimated membership or by nearest subspace.

Five seeds; the extra cases (2-D configuration 8, six classes; 3-D configuration 2; noise 0.3) use
the estimated memberships only. One CPU thread; well under two minutes.

    python benchmarks/redunet_mixtures.py
    python benchmarks/redunet_mixtures.py --seeds 2 --layers 50     # quicker

Results are printed and written to ``benchmarks/results/redunet_mixtures.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _machine import machine_info  # benchmarks/ is on sys.path when a script here runs

from crate_edu import coding_rate as cr
from crate_edu.models import build_redunet

RESULTS = Path(__file__).parent / "results" / "redunet_mixtures.json"
#: (name, dim, configuration, noise, memberships used to build the layers)
CASES = [
    ("2d-config1", 2, 1, 0.1, ("estimated", "true")),
    ("3d-config1", 3, 1, 0.1, ("estimated", "true")),
    ("2d-config8-six-classes", 2, 8, 0.1, ("estimated",)),
    ("3d-config2", 3, 2, 0.1, ("estimated",)),
    ("2d-config1-noise0.3", 2, 1, 0.3, ("estimated",)),
    ("3d-config1-noise0.3", 3, 1, 0.3, ("estimated",)),
]
#: the layers whose rates are recorded for every seed (seed 0's curve every layers // 40 layers)
MARKS = (0, 1, 2, 5, 10, 20, 50, 100, 150, 200)


def nearest_subspace(
    train: torch.Tensor, labels: torch.Tensor, test: torch.Tensor, r: int = 1
) -> torch.Tensor:
    """Class of each test row: the class whose top-r principal directions keep most of its norm."""
    scores = []
    for j in range(int(labels.max()) + 1):
        _, _, Vh = torch.linalg.svd(
            train[labels == j].double(), full_matrices=False
        )  # right singular vectors
        scores.append((test.double() @ Vh[:r].T).norm(dim=1))  # ‖U_j^T z‖
    return torch.stack(scores, 1).argmax(1)


def ideal_delta_r(dim: int, classes: int, per_class: int, eps: float) -> float | None:
    """ΔR when each class is collapsed onto its own axis (K ≤ d orthogonal directions): the largest
    ΔR that unit-norm features of these class sizes can reach. None when K > d."""
    if classes > dim:
        return None
    labels = torch.arange(classes).repeat_interleave(per_class)
    Z = torch.eye(dim, dtype=torch.float64)[labels]  # (m, d): sample i = e_{y_i}
    return cr.mcr2(Z, labels, math.sqrt(eps)).item()


def accuracy(pred: torch.Tensor, labels: torch.Tensor) -> float:
    return (pred == labels).double().mean().item()


def run(dim: int, data: int, noise: float, seed: int, layers: int, membership: str, hyper: dict) -> dict:
    rng = np.random.RandomState(seed)  # train then test from one stream, as the official notebooks
    X, y = cr.redunet_mixture(dim, data, noise, 100, rng)
    X_test, y_test = cr.redunet_mixture(dim, data, noise, 100, rng)
    start = time.perf_counter()
    net = build_redunet(X, y, layers, membership=membership, **hyper)
    build_s = time.perf_counter() - start
    with torch.no_grad():
        Z = net(X) if membership == "estimated" else net.forward_train(X, y)
        test_features = net.features(X_test)  # test time: estimated memberships
    eps = math.sqrt(hyper["eps"])
    test_dR = [cr.mcr2(F.double(), y_test, eps).item() for F in test_features]
    return {
        "build_seconds": round(build_s, 3),
        "train": [
            {
                "layer": h.layer,
                "delta_r": h.delta_r,
                "r": h.r,
                "r_c": h.r_c,
                "membership_accuracy": h.membership_accuracy,
            }
            for h in net.history
        ],
        "test_delta_r": test_dR,
        "accuracy": {
            "estimated_membership": accuracy(net.predict(X_test), y_test),
            "nearest_subspace_features": accuracy(nearest_subspace(Z, y, test_features[-1]), y_test),
            "nearest_subspace_inputs": accuracy(nearest_subspace(X, y, X_test), y_test),
        },
        "train_membership_accuracy_last_layer": net.history[-1].membership_accuracy,
    }


def summary(runs: list[dict], layers: int) -> dict:
    marks = [m for m in MARKS if m <= layers] + ([layers] if layers not in MARKS else [])

    def stats(values: list[float]) -> dict:
        return {"mean": statistics.fmean(values), "min": min(values), "max": max(values)}

    out = {
        "train_delta_r_by_layer": {m: stats([r["train"][m]["delta_r"] for r in runs]) for m in marks},
        "train_r_by_layer": {m: stats([r["train"][m]["r"] for r in runs]) for m in marks},
        "train_r_c_by_layer": {m: stats([r["train"][m]["r_c"] for r in runs]) for m in marks},
        "test_delta_r_by_layer": {m: stats([r["test_delta_r"][m] for r in runs]) for m in marks},
        "accuracy": {k: stats([r["accuracy"][k] for r in runs]) for k in runs[0]["accuracy"]},
        "train_delta_r_monotone_seeds": sum(
            all(
                b["delta_r"] >= a["delta_r"] - 1e-5
                for a, b in zip(r["train"][:-1], r["train"][1:], strict=True)
            )
            for r in runs
        ),
        "largest_train_delta_r_drop": max(
            max(a["delta_r"] - b["delta_r"] for a, b in zip(r["train"][:-1], r["train"][1:], strict=True))
            for r in runs
        ),
        "build_seconds": stats([r["build_seconds"] for r in runs]),
    }
    return out


def curve(run_: dict, layers: int) -> dict:
    """One seed's rates at every ``layers // 40``-th layer (and the last), rounded to 1e-6."""
    keep = sorted(set(range(0, layers + 1, max(1, layers // 40))) | {layers})
    train = run_["train"]
    return {
        "layer": keep,
        **{k: [round(train[i][k], 6) for i in keep] for k in ("delta_r", "r", "r_c")},
        "test_delta_r": [round(run_["test_delta_r"][i], 6) for i in keep],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--layers", type=int, default=200)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    hyper = {"eta": 0.5, "eps": 0.1, "lmbda": 200.0}
    start = time.perf_counter()
    report = {
        "machine": machine_info(),
        "torch_threads": 1,
        "settings": {
            "layers": args.layers,
            **hyper,
            "eps_note": "official ε²; rates use ε = √eps",
            "samples_per_class": 100,
            "seeds": list(range(args.seeds)),
        },
        "cases": {},
    }
    for name, dim, data, noise, memberships in CASES:
        for membership in memberships:
            runs = [run(dim, data, noise, s, args.layers, membership, hyper) for s in range(args.seeds)]
            key = f"{name}/{membership}"
            s = summary(runs, args.layers)
            report["cases"][key] = {
                "dim": dim,
                "configuration": data,
                "noise": noise,
                "classes": len(cr.REDUNET_MIXTURE_CENTERS[dim][data]),
                "membership": membership,
                "ideal_delta_r": ideal_delta_r(
                    dim, len(cr.REDUNET_MIXTURE_CENTERS[dim][data]), 100, hyper["eps"]
                ),
                "summary": s,
                "seed0_curve": curve(runs[0], args.layers),
            }
            dR = s["train_delta_r_by_layer"]
            acc = s["accuracy"]
            print(
                f"{key:32s} ΔR train {dR[0]['mean']:.4f} -> {dR[args.layers]['mean']:.4f} "
                f"(ideal {report['cases'][key]['ideal_delta_r'] or float('nan'):.4f})  "
                f"test {s['test_delta_r_by_layer'][0]['mean']:.4f} -> "
                f"{s['test_delta_r_by_layer'][args.layers]['mean']:.4f}  "
                f"acc π̂ {acc['estimated_membership']['mean']:.3f}  "
                f"subspace {acc['nearest_subspace_features']['mean']:.3f} "
                f"(inputs {acc['nearest_subspace_inputs']['mean']:.3f})  "
                f"monotone {s['train_delta_r_monotone_seeds']}/{args.seeds}",
                flush=True,
            )
    report["total_seconds"] = round(time.perf_counter() - start, 1)
    print(f"total {report['total_seconds']} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=args.out.parent, suffix=".tmp", delete=False) as f:
        f.write(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    os.chmod(f.name, 0o644)
    os.replace(f.name, args.out)  # never a torn file
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
