"""Untrained models whose outputs depend on the image, for comparing an exported file with PyTorch.

Plain random weights give (nearly) the same output for every image and hide a broken operator, so two steps make an
untrained model worth comparing. BatchNorm statistics are calibrated on real photos (Ultralytics' bus.jpg and
zidane.jpg), which keeps every layer's activations at a sane scale (with the default statistics YOLO's activations
grow layer by layer, and float32 rounding alone moves the outputs by whole pixels). And the class logits of the
detection head are standardised over those photos, so class scores spread over (0, 1) where the sigmoid is
sensitive: the default prior puts every score near 1e-4 and random weights put many near 1, both in the sigmoid's flat
tails, which would hide a wrong class logit and make detections tie on score.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def photos(h: int, w: int, batch: int = 1) -> np.ndarray:
    """Real photos resized to h x w, as a float32 (batch, 3, h, w) array in [0, 1]; bus.jpg first, then zidane.jpg."""
    import cv2
    from ultralytics.utils import ASSETS

    images = [cv2.imread(str(ASSETS / f))[:, :, ::-1] for f in ("bus.jpg", "zidane.jpg")]
    x = [cv2.resize(images[i % 2], (w, h)).transpose(2, 0, 1) for i in range(batch)]
    # C-contiguous: MNN's and ncnn's AutoBackend read the raw buffer and ignore strides
    return np.ascontiguousarray(np.stack(x) / 255.0, dtype=np.float32)


def calibrated_checkpoint(cfg: str, path: Path, spread_scores: bool = True) -> Path:
    """Build model `cfg` untrained (seed 0), calibrate it on real photos (module docstring), save it to `path`.

    Args:
        cfg (str): Model YAML, as `yolo train model=` takes it (`yolov8n-cot.yaml`).
        path (Path): Checkpoint to write.
        spread_scores (bool): Standardise the detection head's class logits over the photos.

    Returns:
        (Path): `path`, a checkpoint `YOLO(path)` loads.
    """
    import torch
    from torch import nn
    from ultralytics import YOLO

    torch.manual_seed(0)
    model = YOLO(cfg)
    net = model.model
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batches
    net.train()
    with torch.no_grad():
        for h, w in [(160, 160), (128, 192), (192, 128)]:
            x = torch.from_numpy(photos(h, w, batch=4))
            net(torch.cat((x, x.flip(3))))  # the photos and their mirror images
        net.eval()
        head = net.model[-1]
        if spread_scores and hasattr(head, "cv3"):  # standardise each level's class logits over the photos
            # the 1x1 convs that output class logits (YOLO26's end-to-end head infers with its one-to-one branch)
            heads = [branch[-1] for branch in (head.one2one_cv3 if getattr(head, "end2end", False) else head.cv3)]
            logits = []
            hooks = [
                m.register_forward_hook(lambda m, i, out: logits.append(out - m.bias[:, None, None])) for m in heads
            ]
            net(torch.from_numpy(photos(256, 192, batch=2)))
            for hook in hooks:
                hook.remove()
            for m, z in zip(heads, logits):
                m.weight.div_(z.std())
                m.bias.copy_(-z.mean((0, 2, 3)) / z.std())
    model.save(path)
    return Path(path)
