"""`model.fuse()` folds the operators' own norms and scales (yolo_attn.fusion, the inventory's BaseModel.fuse patch):
the fused model computes what the unfused one does, has fewer norm passes, exports in its fused form, and the unfused
model's state-dict names stay those of the checkpoints."""

import copy

import numpy as np
import pytest
import torch
import ultralytics.nn.tasks as tasks
from helpers import outputs, randomise_norms
from torch import nn
from ultralytics import YOLO

from yolo_attn import AttnConv, CoordAtt, CoTAttention, patches, register, unregister
from yolo_attn.fusion import fold_norms

pytestmark = pytest.mark.usefixtures("one_thread")

# Each family member the folds touch: CoT alone, at P3 (-neck) and as the bottleneck of C2f/C3k2; AttnConv alone and
# at P3; CoordAtt (nothing of its own folds: its Conv's BN is the stock fold).
VARIANTS = [
    "yolov8n-cot.yaml",
    "yolov8n-cot-neck.yaml",
    "yolov8n-c2f-cot.yaml",
    "yolo11n-c3k2-cot.yaml",
    "yolov8n-attnconv.yaml",
    "yolov8n-attnconv-neck.yaml",
    "yolov8n-ca.yaml",
    "yolo11n-cot-neck.yaml",
    "yolo26n-attnconv-neck.yaml",
    "yolo26n-c3k2-cot.yaml",
]
# Names the unfused state dict must keep (checkpoints of earlier releases hold them).
KEPT = {
    CoTAttention: ("dyn_bn.weight", "dyn_bn.running_var", "value.bn.weight", "attn_norm.weight"),
    AttnConv: ("norm.weight", "norm.bias", "proj.weight"),
    CoordAtt: ("squeeze.bn.weight",),
}


def _n_norms(model: nn.Module) -> int:
    """BatchNorms plus GroupNorms with an affine: the norm passes with parameters of their own."""
    return sum(isinstance(m, nn.BatchNorm2d) or (isinstance(m, nn.GroupNorm) and m.affine) for m in model.modules())


def _close(y: torch.Tensor, ref: torch.Tensor, rel: float = 1e-5) -> None:
    diff, scale = float((y - ref).abs().max()), float(ref.abs().max())
    assert diff <= rel * scale + 1e-5, f"max|Δ| = {diff:.3g}, max|y| = {scale:.3g}"


@pytest.mark.parametrize("cfg", VARIANTS)
def test_fuse_keeps_outputs_and_folds_the_plugin_norms(cfg):
    torch.manual_seed(0)
    net = randomise_norms(YOLO(cfg).model).eval()
    keys = list(net.state_dict())
    assert keys == list(YOLO(cfg).model.state_dict())  # built as a fresh model (and as its checkpoints) hold them
    plugin = [(n, m) for n, m in net.named_modules() if type(m) in KEPT]
    assert plugin
    for name, m in plugin:
        assert all(f"{name}.{k}" in keys for k in KEPT[type(m)]), name

    fused = copy.deepcopy(net).fuse(verbose=False)
    assert list(net.state_dict()) == keys  # fusing a copy leaves the original alone
    left = [n for n, m in fused.named_modules() if isinstance(m, nn.BatchNorm2d)]
    assert left == [], left  # Ultralytics folds its Conv+BN pairs, the plugin the rest (CoT's dyn_bn)
    affine_gn = [n for n, m in fused.named_modules() if isinstance(m, nn.GroupNorm) and m.affine]
    assert all(".attn_norm" in n for n in affine_gn), affine_gn  # CoT's per-image GN is the only one kept
    stock_fused = tasks.BaseModel.fuse.__wrapped__(copy.deepcopy(net), verbose=False)
    if any(isinstance(m, (CoTAttention, AttnConv)) for _, m in plugin):
        assert _n_norms(fused) < _n_norms(stock_fused)  # the plugin's fold happened on top of the stock one

    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        for y, ref in zip(outputs(fused(x)), outputs(net(x))):
            _close(y, ref)


def _layer_scaled(cls):
    torch.manual_seed(0)
    m = {
        CoTAttention: lambda: CoTAttention(32, 32, layer_scale=0.5),
        AttnConv: lambda: AttnConv(32, 32, 8, (3, 5), 0.5, 3, True, 2.0, layer_scale=0.5),
    }[cls]()
    for p in m.modules():
        if getattr(p, "gamma", None) is not None:
            with torch.no_grad():
                p.gamma.copy_(torch.randn(p.gamma.shape))
    return randomise_norms(m).eval()


@pytest.mark.parametrize("cls", [CoTAttention, AttnConv])
def test_operator_folds_alone_with_layer_scale_traced_and_with_gradients(cls):
    """Unfused Conv+BN inside (the fold reaches a BN, not a conv), random γ, odd sizes, the traced (export) form."""
    m = _layer_scaled(cls)
    folded = copy.deepcopy(m)
    assert fold_norms(folded) >= 1
    fold_norms(folded)  # idempotent
    gammas = [p for p in folded.modules() if getattr(p, "gamma", None) is not None]
    assert len(gammas) == (cls is CoTAttention)  # CoT's γ scales its (B, C, 1, 1) weights: nothing to gain
    for hw in [(7, 5), (1, 1), (13, 9)]:
        x = torch.randn(2, 32, *hw)
        with torch.no_grad():
            ref = m(x)
            _close(folded(x), ref)
            _close(torch.jit.trace(folded, x, check_trace=False)(x), ref)
        _close(folded(x.requires_grad_()).detach(), ref)  # CoT's autograd path adds the shift apart


def test_folded_operators_export_to_onnx_and_match(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    for cls in (CoTAttention, AttnConv):
        folded = copy.deepcopy(_layer_scaled(cls))
        fold_norms(folded)
        x = torch.randn(1, 32, 11, 7)
        f = tmp_path / f"{cls.__name__}.onnx"
        axes = {0: "b", 2: "h", 3: "w"}
        torch.onnx.export(
            folded, x, f, input_names=["x"], output_names=["y"], dynamic_axes={"x": axes, "y": axes}, dynamo=False
        )
        session = ort.InferenceSession(str(f), providers=["CPUExecutionProvider"])
        for shape in [(1, 32, 11, 7), (2, 32, 6, 17)]:
            x = torch.randn(shape)
            with torch.no_grad():
                ref = folded(x).numpy()
            y = session.run(None, {"x": x.numpy()})[0]
            assert np.abs(y - ref).max() <= 1e-5 * np.abs(ref).max() + 1e-5, cls.__name__


def test_yolo_export_uses_the_fused_form_and_matches_pytorch():
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    torch.manual_seed(0)
    model = YOLO("yolov8n-cot-neck.yaml")
    randomise_norms(model.model)
    net = copy.deepcopy(model.model).eval()
    f = model.export(format="onnx", imgsz=64, simplify=False, verbose=False)
    ops = {node.op_type for node in onnx.load(f).graph.node}
    assert "BatchNormalization" not in ops  # CoT's dyn_bn was the only BN the stock fuse left
    x = torch.rand(1, 3, 64, 64)
    y = ort.InferenceSession(f, providers=["CPUExecutionProvider"]).run(None, {"images": x.numpy()})[0]
    with torch.no_grad():
        ref = outputs(net(x))[0].numpy()
    assert np.abs(y - ref).max() <= 1e-4 * np.abs(ref).max() + 1e-4


def test_stock_models_fuse_exactly_as_without_the_plugin():
    torch.manual_seed(0)
    net = randomise_norms(YOLO("yolov8n.yaml").model).eval()
    assert fold_norms(net) == 0  # no stock module takes part in the protocol
    a = copy.deepcopy(net).fuse(verbose=False)
    b = tasks.BaseModel.fuse.__wrapped__(copy.deepcopy(net), verbose=False)
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_unregister_restores_the_stock_fuse():
    wrapper = tasks.BaseModel.__dict__["fuse"]
    original = wrapper.__wrapped__
    assert wrapper.__module__ == "yolo_attn.fusion"
    net = YOLO("yolov8n-cot.yaml").model.eval()
    try:
        unregister()
        assert tasks.BaseModel.__dict__["fuse"] is original
        fused = net.fuse(verbose=False)
        assert any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())  # dyn_bn: the stock fuse never reaches it
    finally:
        register()
    assert tasks.BaseModel.__dict__["fuse"].__wrapped__ is original


def test_the_patch_checks_its_assumption(monkeypatch):
    patch = next(p for p in patches.INVENTORY if p.target == f"{patches.TASKS}.BaseModel.fuse")
    patch.check()
    monkeypatch.setattr(tasks.BaseModel, "fuse", lambda self, imgsz=640: self)  # a release that renamed `verbose`
    with pytest.raises(patches.AssumptionFailed, match="BaseModel.fuse"):
        patch.check()
