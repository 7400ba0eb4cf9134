"""torch.compile: every operator compiles as one graph (`fullgraph=True`), and plugin models train and predict with
Ultralytics' `compile=True`.

Inductor takes 10-40 s per operator to compile on a 2-core CPU, so the per-operator test captures the graphs with the
`aot_eager` backend: Dynamo's full-graph capture and AOT Autograd's forward/backward split (the custom backward
functions included), which is what `fullgraph=True` checks. The `yolo` tests run Inductor on a whole model: minutes of
C++ compilation on a 2-core CPU, so they carry the `exhaustive` marker (`pytest -m exhaustive`).
"""

import pytest
import torch
from conftest import YOLO_BIN, run
from helpers import ALL_OPS_YAML
from ultralytics import YOLO
from ultralytics.utils import ASSETS

from yolo_attn import AttnConv, CoordAtt, CoTAttention
from yolo_attn.cot import C2f_CoT, C3k2_CoT

COMPILED = "starting torch.compile"
UNCOMPILED = ("continuing uncompiled", "torch.compile failed")  # Ultralytics' words when it falls back to eager


# The fast set captures each attention operator; the CSP blocks (CoT inside) and AttnConv's FFN with
# `pytest -m exhaustive`.
@pytest.mark.parametrize(
    "make",
    [
        CoTAttention,
        AttnConv,
        CoordAtt,
        pytest.param(lambda c1, c2: AttnConv(c1, c2, kernel_sizes=[3, 5], ffn_ratio=2.0), marks=pytest.mark.exhaustive),
        pytest.param(lambda c1, c2: C2f_CoT(c1, c2, 1, True), marks=pytest.mark.exhaustive),
        pytest.param(lambda c1, c2: C3k2_CoT(c1, c2, 1, True), marks=pytest.mark.exhaustive),
    ],
    ids=["CoTAttention", "AttnConv", "CoordAtt", "AttnConv-ffn", "C2f_CoT", "C3k2_CoT"],
)
def test_operator_compiles_as_one_graph_for_training_and_inference(make):
    torch.manual_seed(0)
    m = make(32, 32)
    compiled = torch.compile(m, fullgraph=True, backend="aot_eager")
    x = torch.randn(1, 32, 48, 44)  # AttnConv: 2304 x 144 attention scores take the fused-kernel branch
    grad = torch.randn_like(x)
    results = []
    for fn in (compiled, m):  # train mode: forward and backward
        m.zero_grad()
        xg = x.clone().requires_grad_(True)
        fn(xg).backward(grad)
        results.append([xg.grad, *(p.grad for p in m.parameters())])
    for got, expected in zip(*results):
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    m.eval()
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), m(x), atol=1e-5, rtol=1e-5)


# Inductor on a 2-core CPU with its cache empty: yolov8n-cot trains compiled in a few minutes; the every-operator
# detector takes about 15 (train, CLI predict and this parity check, measured).
@pytest.fixture(scope="module", params=["yolov8n-cot.yaml", "yolov8n-allops.yaml"])
def compiled_run(request, tmp_path_factory, tiny_data):
    """`yolo train ... compile=True` of a shipped CoT model, or of the every-operator detector: its folder and log."""
    work = tmp_path_factory.mktemp("compile")
    (work / "yolov8-allops.yaml").write_text(ALL_OPS_YAML)
    args = ["epochs=1", "imgsz=64", "batch=8", "workers=0", "plots=False", "device=cpu", "compile=True"]
    args += [f"model={request.param}", f"data={tiny_data}", f"project={work}", "name=train"]
    out = run([YOLO_BIN, "train", *args], work, timeout=1800)
    return work, out.stdout + out.stderr


@pytest.mark.exhaustive
def test_yolo_train_with_compile(compiled_run):
    work, log = compiled_run
    assert COMPILED in log and not any(s in log for s in UNCOMPILED), log[-3000:]
    assert (work / "train" / "weights" / "best.pt").is_file()


@pytest.mark.exhaustive
def test_predict_with_compile_matches_eager(compiled_run):
    """`predict(compile=True)` (the Python API; `yolo predict compile=True` calls it) runs the trained model compiled
    by Inductor, and the compiled network gives the eager network's outputs on the image it predicted."""
    work, _ = compiled_run
    model = YOLO(work / "train" / "weights" / "best.pt")
    results = model.predict(ASSETS / "bus.jpg", imgsz=64, compile=True, device="cpu", verbose=False)
    assert len(results) == 1 and results[0].boxes is not None
    compiled = model.predictor.model  # AutoBackend as Ultralytics' `attempt_compile` returned it
    assert isinstance(compiled, torch._dynamo.eval_frame.OptimizedModule), type(compiled)
    with torch.inference_mode():
        x = model.predictor.preprocess(model.predictor.batch[1])  # the letterboxed image: its shape, no recompile
        got, expected = compiled(x), compiled._orig_mod(x)
    got, expected = (y[0] if isinstance(y, (list, tuple)) else y for y in (got, expected))
    torch.testing.assert_close(got, expected, atol=1e-3 * expected.abs().max().item(), rtol=1e-4)
