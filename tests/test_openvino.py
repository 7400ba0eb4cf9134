"""Deployment to OpenVINO: Ultralytics' `export(format="openvino")` of every shipped model YAML matches PyTorch at f32.

Every file in model_yamls/ (those written by reference with `base:` included, every task) is built at scale n,
exported with the Python API at a fixed size, compiled from the exported .xml with `openvino.Core` on the CPU at
`INFERENCE_PRECISION_HINT=f32` (set explicitly: OpenVINO's default on CPUs with bf16 support is bf16, which moves the
boxes of an untrained model by pixels; see README), and compared with the PyTorch model under test_export.py's parity
bound, max|Δ| <= 1e-3 * max|y| + 1e-4 per output block. The every-operator detector runs in the fast set; every
shipped YAML carries the `exhaustive` marker.

The models are untrained. So that a wrong operator shows in the outputs, every norm gets random affine parameters
(conftest.randomise_norms), the BatchNorm statistics are those of the test photos, and the class logits are centred
(untrained heads put every class score near its prior, 1e-4, where the sigmoid is flat). Each test first checks in
PyTorch that a 1 % error in the output of any plugin layer breaks the parity bound, then checks the OpenVINO model.
helpers.make_checkpoint does the same more thoroughly, but costs 5-15 s a model on two cores; this costs < 0.5 s.
"""

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import (
    ALL_OPS_YAML,
    IMGSZ,
    OTHER_SIZES,
    assert_close,
    export,
    images,
    outputs,
    randomise_norms,
    reference,
    scale_n,
)
from torch import nn
from ultralytics import YOLO
from ultralytics.nn.modules import Classify

from yolo_attn.lookup import shipped_dir
from yolo_attn.operators import plugin_modules

# OpenVINO sends usage telemetry (a request from a subprocess, and a consent file in ~/intel) when it is imported and
# when it converts a model, unless it runs in CI: its own opt-out. Ultralytics does not read `CI`.
with pytest.MonkeyPatch.context() as mp:
    mp.setenv("CI", "true")
    ov = pytest.importorskip("openvino")

YAMLS = sorted(shipped_dir("model_yamls").glob("*.yaml"))  # all of them, by reference or in full, every task


@pytest.fixture(scope="module", autouse=True)
def no_telemetry():
    """No telemetry from OpenVINO's converter either (see the import above)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CI", "true")
        yield


@pytest.fixture(scope="module")
def core():
    return ov.Core()


def checkpoint(cfg: str, path: Path, xs: list) -> Path:
    """Build an untrained model whose outputs react to every layer (see the module docstring) and save it."""
    torch.manual_seed(0)
    model = YOLO(cfg)
    net = randomise_norms(model.model)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # the statistics of the one calibration batch
    x = torch.from_numpy(np.concatenate(xs))
    head = net.model[-1]
    with torch.no_grad():
        net.train()(torch.cat((x, x.flip(3))))  # the photos and their mirror images
        net.eval()
        if isinstance(head, Classify):  # probabilities spread over the classes instead of all near 1 / nc
            logits = []
            hook = head.linear.register_forward_hook(lambda m, i, out: logits.append(out))
            net(x)
            hook.remove()
            head.linear.weight.mul_(3 / logits[0].std())
        else:  # class logits (YOLO26's end-to-end head infers with its one-to-one branch) centred on 0
            for branch in head.one2one_cv3 if getattr(head, "end2end", False) else head.cv3:
                branch[-1].bias.zero_()
    model.save(path)
    return path


def assert_sensitive(ckpt: Path, xs: list, refs: list, what: str) -> None:
    """Check that scaling the output of every plugin layer by 1.01 breaks the parity bound on some input."""
    net = YOLO(ckpt).model.float().eval()
    layers = [m for m in net.modules() if type(m) in plugin_modules().values()]
    assert layers, f"{what} has no plugin layer"
    hooks = [m.register_forward_hook(lambda m, i, out: out * 1.01) for m in layers]
    broken = 0
    with torch.no_grad():
        for x, ref in zip(xs, refs):
            try:
                assert_close(outputs(net(torch.from_numpy(x)))[0].numpy(), ref, what)
            except AssertionError:
                broken += 1
    for hook in hooks:
        hook.remove()
    assert broken, f"{what}: a 1 % error in its plugin layers passes the parity bound; the check would be blind"


def compile_f32(core, folder: Path):
    """Compile the exported model for the CPU at f32 (OpenVINO's default there may be bf16)."""
    compiled = core.compile_model(str(next(folder.glob("*.xml"))), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    assert compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32
    return compiled


@pytest.mark.exhaustive
@pytest.mark.parametrize("yaml", YAMLS, ids=lambda p: p.stem)
def test_shipped_yaml_openvino_matches_pytorch_f32(tmp_path, core, yaml):
    cfg = scale_n(yaml)
    xs = [images(IMGSZ, IMGSZ)]
    ckpt = checkpoint(cfg, tmp_path / f"{Path(cfg).stem}.pt", xs)
    refs = reference(ckpt, xs)
    assert_sensitive(ckpt, xs, refs, cfg)
    compiled = compile_f32(core, export(ckpt, "openvino", format="openvino", dynamic=False))
    for x, ref in zip(xs, refs):
        assert_close(compiled(x)[0], ref, f"{cfg} OpenVINO f32")  # the first output (a segment model adds protos)


def test_every_operator_dynamic_openvino_matches_pytorch_f32(tmp_path, core):
    """A dynamic export on rectangular sizes whose maps are not multiples of AttnConv's pool, and a batch of 2."""
    (tmp_path / "yolov8-allops.yaml").write_text(ALL_OPS_YAML)
    xs = [images(IMGSZ, IMGSZ, batch=2)] + [images(h, w) for h, w in OTHER_SIZES]
    ckpt = checkpoint(str(tmp_path / "yolov8n-allops.yaml"), tmp_path / "allops.pt", xs[:1])
    refs = reference(ckpt, xs)
    assert_sensitive(ckpt, xs, refs, "every operator")
    compiled = compile_f32(core, export(ckpt, "openvino", format="openvino", dynamic=True))
    for x, ref in zip(xs, refs):
        assert_close(compiled(x)[0], ref, f"every operator, OpenVINO f32, at {x.shape}")
