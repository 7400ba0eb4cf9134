"""torch.compile: every operator compiles as one graph (`fullgraph=True`), and plugin models train and predict with
Ultralytics' `compile=True`.

Inductor takes 10-40 s per operator to compile on a 2-core CPU, so the per-operator test captures the graphs with the
`aot_eager` backend: Dynamo's full-graph capture and AOT Autograd's forward/backward split (the custom backward
functions included), which is what `fullgraph=True` checks. The `yolo` tests run Inductor on a whole model: minutes of
C++ compilation on a 2-core CPU, so they carry the `exhaustive` marker (`pytest -m exhaustive`).
"""

import pytest
import torch
from helpers import ALL_OPS_YAML, YOLO_BIN, run, table_operator
from ultralytics import YOLO
from ultralytics.utils import ASSETS

from yolo_attn import AttnConv
from yolo_attn.operators import BUILTINS

COMPILED = "starting torch.compile"
UNCOMPILED = ("continuing uncompiled", "torch.compile failed")  # Ultralytics' words when it falls back to eager


# The fast set captures each attention operator; the CSP blocks (CoT inside) and AttnConv's FFN with
# `pytest -m exhaustive`.
def exhaustive_unless(op) -> tuple:
    """The channel-keeping operators compile in the fast set; the CSP twins (slower to compile) with -m exhaustive."""
    return () if op.keeps_channels else (pytest.mark.exhaustive,)


@pytest.mark.parametrize(
    "make",
    [  # every row of the operator table (the CSP twins with -m exhaustive), and AttnConv with its FFN
        *(
            pytest.param(lambda name=op.name: table_operator(name, 32), id=op.name, marks=exhaustive_unless(op))
            for op in BUILTINS
        ),
        pytest.param(
            lambda: (AttnConv(32, 32, kernel_sizes=[3, 5], ffn_ratio=2.0), 32),
            id="AttnConv-ffn",
            marks=pytest.mark.exhaustive,
        ),
    ],
)
def test_operator_compiles_as_one_graph_for_training_and_inference(make):
    torch.manual_seed(0)
    m, c = make()
    compiled = torch.compile(m, fullgraph=True, backend="aot_eager")
    x = torch.randn(1, c, 48, 44)  # AttnConv: 2304 x 144 attention scores take the fused-kernel branch
    with torch.no_grad():
        grad = torch.randn(m(x).shape)  # a CSP twin doubles the channels
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


@pytest.mark.long
def test_yolo_train_with_compile(compiled_run):
    work, log = compiled_run
    assert COMPILED in log and not any(s in log for s in UNCOMPILED), log[-3000:]
    assert (work / "train" / "weights" / "best.pt").is_file()


@pytest.mark.long
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
