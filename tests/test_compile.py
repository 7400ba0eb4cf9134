"""torch.compile: every operator compiles as one graph (`fullgraph=True`), and `yolo train ... compile=True` trains.

Inductor takes 10-40 s per operator to compile on a 2-core CPU, so the per-operator test captures the graphs with the
`aot_eager` backend: Dynamo's full-graph capture and AOT Autograd's forward/backward split (the custom backward
functions included), which is what `fullgraph=True` checks. The `yolo train` test runs Inductor on a whole model.
"""

import pytest
import torch
from conftest import YOLO_BIN, run

from yolo_attn import AttnConv, CoordAtt, CoTAttention
from yolo_attn.cot import C2f_CoT


@pytest.mark.parametrize("make", [CoTAttention, AttnConv, CoordAtt, lambda c1, c2: C2f_CoT(c1, c2, 1, True)])
def test_operator_compiles_as_one_graph_for_training_and_inference(make):
    torch.manual_seed(0)
    m = make(16, 16)
    compiled = torch.compile(m, fullgraph=True, backend="aot_eager")
    x = torch.randn(1, 16, 48, 44)  # AttnConv: 2304 x 144 attention scores take the fused-kernel branch
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


def test_yolo_train_with_compile(tmp_path, tiny_data):
    args = ["epochs=1", "imgsz=64", "batch=8", "workers=0", "plots=False", "device=cpu", "compile=True"]
    args += ["model=yolov8n-cot.yaml", f"data={tiny_data}", f"project={tmp_path}"]
    out = run([YOLO_BIN, "train", *args], tmp_path)
    log = out.stdout + out.stderr
    assert "starting torch.compile" in log and "continuing uncompiled" not in log, log[-3000:]
    assert (tmp_path / "train" / "weights" / "best.pt").is_file()
