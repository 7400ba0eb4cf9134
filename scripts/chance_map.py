"""Chance level of a detection set's mAP: boxes placed at random, scored at random, matched as Ultralytics validates.

For each validation image, K boxes get a centre uniform over the image and a width and height drawn together from the
training labels (so their sizes are the set's own), a uniform random confidence and class 0; they are matched to the
labels with Ultralytics' own `match_predictions` and `ap_per_class`, the way `yolo val` scores a model. The mean over
`--draws` draws is printed for each K. A dense single-class set (neon-trees: about 22 crowns per 320 px tile) has a
chance level above zero, so a model's mAP means something only well above it.

    python scripts/chance_map.py --data neon-trees.yaml --k 22 100 300
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def labels(folder: Path) -> dict[str, np.ndarray]:
    """Return each label file's rows (cls, x, y, w, h; normalised) by image stem."""
    out = {}
    for f in sorted(folder.glob("*.txt")):
        rows = np.loadtxt(f, ndmin=2) if f.stat().st_size else np.zeros((0, 5))
        out[f.stem] = rows.reshape(-1, 5)
    return out


def label_dir(images: str) -> Path:
    """Ultralytics' rule: the labels of `.../images/<split>` are in `.../labels/<split>`."""
    p = Path(images)
    return p.parent.parent / "labels" / p.name


def chance(train_wh: np.ndarray, val: dict[str, np.ndarray], k: int, rng: np.random.Generator) -> tuple[float, float]:
    """Return (mAP50, mAP50-95) of one draw of `k` random boxes per validation image (normalised coordinates)."""
    import torch
    from ultralytics.engine.validator import BaseValidator
    from ultralytics.utils.metrics import ap_per_class, box_iou
    from ultralytics.utils.ops import xywh2xyxy

    matcher = BaseValidator.__new__(BaseValidator)  # match_predictions needs only the IoU thresholds
    matcher.iouv = torch.linspace(0.5, 0.95, 10)
    tps, confs, targets = [], [], []
    for rows in val.values():
        wh = train_wh[rng.integers(len(train_wh), size=k)]
        xy = rng.uniform(0, 1, size=(k, 2))
        conf = rng.uniform(0, 1, size=k)
        order = np.argsort(-conf)
        pred = torch.from_numpy(xywh2xyxy(np.concatenate([xy, wh], 1)[order]))
        conf = conf[order]
        gt = torch.from_numpy(xywh2xyxy(rows[:, 1:5]))
        if len(gt):
            iou = box_iou(gt, pred)
            tp = matcher.match_predictions(torch.zeros(k), torch.from_numpy(rows[:, 0]), iou).numpy()
        else:
            tp = np.zeros((k, 10), bool)
        tps.append(tp), confs.append(conf), targets.append(rows[:, 0])
    ap = ap_per_class(np.concatenate(tps), np.concatenate(confs), np.zeros(sum(map(len, confs))),
                      np.concatenate(targets))[5]  # fmt: skip
    return float(ap[:, 0].mean()), float(ap.mean())


def main() -> None:
    """Print the chance mAP50 and mAP50-95 for each K."""
    from ultralytics.data.utils import check_det_dataset

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="neon-trees.yaml")
    ap.add_argument("--k", type=int, nargs="+", default=[22, 100, 300], help="random boxes per image")
    ap.add_argument("--draws", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    info = check_det_dataset(args.data)
    train = labels(label_dir(info["train"]))
    val = labels(label_dir(info["val"]))
    train_wh = np.concatenate(list(train.values()))[:, 3:5]
    n = sum(map(len, val.values()))
    print(f"{args.data}: {len(train_wh)} training boxes, {len(val)} validation images with {n} boxes "
          f"({n / len(val):.1f} per image)")  # fmt: skip
    rng = np.random.default_rng(args.seed)
    for k in args.k:
        m = np.array([chance(train_wh, val, k, rng) for _ in range(args.draws)])
        (m50, m), (s50, s) = m.mean(0), m.std(0, ddof=1)
        print(f"K={k:4d} random boxes per image: mAP50 {m50:.4f} ± {s50:.4f}, mAP50-95 {m:.4f} ± {s:.4f} "
              f"(mean ± sd over {args.draws} draws)")  # fmt: skip


if __name__ == "__main__":
    main()
