"""The benchmark command on its tiniest setting, the FLOP count it relies on, its statistics, the finetune mode's
report, progress and Ctrl-C, and the shape of the `yolo_attn.bench` package (no import circle, no private imports).

The models and finetune modes train and time several models end to end (minutes on 2 cores): `exhaustive` marker.
The ops mode, the finetune mode's start check and its Ctrl-C run end to end in the fast set.
"""

import argparse
import ast
import functools
import json
import os
import re
import signal
import statistics
import subprocess
import time
from pathlib import Path

import pytest
import torch
from helpers import BENCH_BIN, run
from ultralytics import YOLO
from ultralytics.utils.torch_utils import get_flops

import yolo_attn.bench
from yolo_attn import CoordAtt, CoTAttention
from yolo_attn.bench.calibrate import calibrated_checkpoint
from yolo_attn.bench.cli import main
from yolo_attn.bench.finetune import (
    PRESETS,
    START_TOLERANCE,
    add_arguments,
    apply_preset,
    identity_yaml,
    start_gap,
    start_outputs,
)
from yolo_attn.bench.finetune_report import MIN_STOCK_MAP, chart_title, write_report
from yolo_attn.bench.flops import count_flops
from yolo_attn.bench.ops import memory_pass_share
from yolo_attn.bench.profile import KIND_NAMES, kind_of, layer_of, layer_rows
from yolo_attn.bench.progress import Progress
from yolo_attn.bench.runners import OPENVINO_PRECISION, openvino_model
from yolo_attn.bench.stats import noise_test, paired_test
from yolo_attn.bench.zoo import OTHER_TASKS, Entry, discover
from yolo_attn.cot import local_aggregate
from yolo_attn.lookup import shipped_dir
from yolo_attn.operators import BUILTINS

TINY = ["--epochs", "1", "--imgsz-train", "64", "--seeds", "1", "--imgsz-latency", "64", "--imgsz-step", "64"]
TINY += ["--step-batch", "2", "--rounds", "1", "--runs", "1", "--warmup", "0", "--step-rounds", "1", "--step-runs", "1"]
TINY += ["--skip-openvino"]  # suite time: an OpenVINO export per model


TIMED = ("infer", "train")  # the ops mode's two timings
SELECTION = "yolov8n-cot,yolo26n-*"  # one model of a full-YAML family, a whole family by reference (suite time)


def expected_rows() -> list[str]:
    """The selected models at scale n, named as `yolo` names them (yolo26-cot.yaml -> yolo26n-cot), and their stock
    models; per-task variants (-seg-, -pose-, -obb-, -cls-) are not part of the detection benchmark."""
    shipped = sorted(shipped_dir("model_yamls").glob("yolo26-*.yaml"))
    assert shipped
    variants = [p.stem.replace("-", "n-", 1) for p in shipped if not any(t in p.stem for t in OTHER_TASKS)]
    return ["yolov8n", "yolov8n-cot", "yolo26n", *variants]


@pytest.fixture(scope="module")
def bench(tmp_path_factory, tiny_data):
    """Run the benchmark command once over the selected models: 1 tiny epoch, 1 seed, 64 px everywhere."""
    out = tmp_path_factory.mktemp("bench")
    proc = run([BENCH_BIN, "--data", tiny_data, *TINY, "--models", SELECTION, "--out", out], out, timeout=600)
    return out, json.loads((out / "benchmark.json").read_text()), proc.stdout


@pytest.mark.exhaustive
def test_table_has_every_model_with_every_column(bench):
    out, raw, stdout = bench
    tables = markdown_tables((out / "benchmark.md").read_text())
    assert len(tables) == 2  # main table, GFLOPs in detail
    header, rows = tables[0][0], tables[0][2:]
    names = [row.split("|")[1].strip().strip("*") for row in rows]
    assert sorted(names) == sorted(expected_rows())
    assert len(header.split("|")) == len(rows[0].split("|"))
    for row in rows:
        cells = [c.strip() for c in row.split("|")[2:-1]]
        assert "—" not in cells[:-1] and "error" not in row, row  # every measurement present (Δ is "—" only for stock)
    assert all(not m["errors"] for m in raw["models"])
    stock = {m["family"]: m for m in raw["models"] if m["stock"]}
    for m in raw["models"]:
        assert len(m["map_seeds"]) == 1 and 0 <= m["map_seeds"][0] <= 1
        assert m["family"] in stock
        for key in ("pytorch", "onnx", "train_step"):  # the ratio is recomputed from the stored timings
            rounds, ref = m[f"{key}_samples_ms"], stock[m["family"]][f"{key}_samples_ms"]
            assert len(rounds) == len(ref) >= 1 and all(t > 0 for r in rounds for t in r)
            ratios = [statistics.median(a) / statistics.median(b) for a, b in zip(rounds, ref)]
            assert m[f"{key}_ratio"] == pytest.approx(statistics.median(ratios), rel=1e-9), (m["name"], key)
            assert m[f"{key}_ms"] == pytest.approx(statistics.median([t for r in rounds for t in r]), rel=1e-9)
        if m["stock"]:
            assert m["pytorch_ratio"] == m["onnx_ratio"] == m["train_step_ratio"] == 1
    assert (out / "benchmark.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # cost.md: per plugin model the FLOPs ratio, and per runtime the latency ratio and its excess over the FLOPs ratio.
    (cost,) = markdown_tables((out / "cost.md").read_text())
    assert cost[0].split("|")[1:-1] == [" model ", " FLOPs ratio ", " PyTorch ", " ONNX Runtime ", " train step "]
    plugin = {m["name"]: m for m in raw["models"] if not m["stock"]}
    assert sorted(row.split("|")[1].strip() for row in cost[2:]) == sorted(plugin)
    m = plugin[cost[2].split("|")[1].strip()]
    flops = m["gflops_full"] / stock[m["family"]]["gflops_full"]
    cell = cost[2].split("|")[4].strip()  # ONNX Runtime: one round, so no spread
    assert cell.startswith(f"{m['onnx_ratio']:.2f} {m['onnx_ratio'] - flops:+.2f}"), cell
    assert (out / "benchmark.csv").read_text().count("\n") == len(rows) + 1


@pytest.mark.exhaustive
def test_compiled_latency_column(tmp_path, tiny_data, monkeypatch):
    """`--compile`: PyTorch latency under torch.compile as one more column, a ratio to the compiled stock model.

    Dynamo's `eager` backend stands in for Inductor here (minutes of C++ compilation per model on a small CPU); the
    path through the benchmark is the same, and Inductor itself is tested on a whole model in test_compile.py.
    """
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    args = [*TINY, "--models", "yolov8n-ca", "--skip-train", "--skip-onnx", "--compile", "--out", tmp_path]
    assert main(["--data", tiny_data, *map(str, args)]) == 0
    raw = json.loads((tmp_path / "benchmark.json").read_text())
    assert [m["name"] for m in raw["models"]] == ["yolov8n", "yolov8n-ca"]
    assert all(not m["errors"] and m["pytorch_compiled_ms"] > 0 for m in raw["models"])
    assert raw["models"][0]["pytorch_compiled_ratio"] == 1 and raw["models"][1]["pytorch_compiled_ratio"] > 0
    header, _, *rows = markdown_tables((tmp_path / "benchmark.md").read_text())[0]
    column = [c.strip() for c in header.split("|")].index("PyTorch compiled ms")
    assert rows[1].split("|")[column].strip().startswith(f"{raw['models'][1]['pytorch_compiled_ms']:.1f} (")


@pytest.mark.exhaustive
def test_flop_counts_in_the_table(bench):
    """Stock models: the full count equals Ultralytics' (its rules cover them). Plugin layers: the full count covers
    all that THOP's rules count (the elementwise rest on top); the whole-model difference is small either way."""
    _, raw, _ = bench
    for m in raw["models"]:
        detail = m["gflops_detail"]
        if m["stock"]:
            assert m["gflops_full"] == pytest.approx(m["gflops_ultralytics"], rel=0.005)
            assert detail["plugin_layers"] == 0
        else:
            assert detail["plugin_layers"] > 0
            assert detail["plugin_full"] >= detail["plugin_thop"] > 0
            assert m["gflops_full"] == pytest.approx(m["gflops_ultralytics"], rel=0.05)
    rows = markdown_tables((bench[0] / "benchmark.md").read_text())[1][2:]
    assert sorted(row.split("|")[1].strip() for row in rows) == sorted(expected_rows())


def markdown_tables(text: str) -> list[list[str]]:
    """The Markdown tables of a document, each as its list of lines."""
    tables, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    return tables


def test_discover_names_and_filter():
    names = [e.name for e in discover()]
    assert names[:1] == ["yolov8n"] and {"yolo11n", "yolo11n-c3k2-cot", *expected_rows()} <= set(names)
    assert not any(t in name for name in names for t in OTHER_TASKS)
    assert sorted(e.name for e in discover(SELECTION.split(","))) == sorted(expected_rows())
    assert [e.name for e in discover(["yolo11n-ca"])] == ["yolo11n", "yolo11n-ca"]  # stock of the family comes along
    assert [e.name for e in discover(["yolov8n"])] == ["yolov8n"]
    with pytest.raises(SystemExit):
        discover(["no-such-model"])


def test_full_count_of_stock_model_equals_ultralytics_at_640():
    model = YOLO("yolov8n.yaml").model.fuse(verbose=False)
    assert count_flops(model, 640) / 1e9 == pytest.approx(get_flops(model, 640), rel=0.001)  # 8.7 GFLOPs


def test_local_aggregation_counts_k2_products_and_sums():
    b, c, h, w, k = 1, 16, 5, 7, 3
    v, a = torch.rand(b, c, h, w), torch.rand(b, c // 8, k * k, h, w)
    # One product per offset and output position whose window lies inside the image (the zero padding is not
    # computed), one sum per product but the first at each position.
    products = c * sum(h - abs(dy) for dy in (-1, 0, 1)) * sum(w - abs(dx) for dx in (-1, 0, 1))
    assert count_flops(Lambda(lambda x: local_aggregate(x, a, k)), v) == 2 * products - c * h * w


def test_coord_att_count_matches_its_formula():
    c, h, w = 32, 6, 9
    m = CoordAtt(c, c).eval()
    mip = m.attn_h.in_channels
    pools = 2 * c * h * w  # two means
    squeeze = 2 * c * mip * (h + w) + 2 * mip * (h + w)  # 1x1 conv (2 per MAC) + batch norm
    gates = 2 * mip * c * (h + w)  # two 1x1 convs back to C
    apply = 2 * c * h * w  # x * a_h * a_w
    assert count_flops(m, torch.rand(1, c, h, w)) == pools + squeeze + gates + apply


def test_cot_count_exceeds_its_convolutions_by_the_aggregation():
    c, hw, k = 32, 10, 3
    m = CoTAttention(c, c).eval()
    convs = sum(
        2 * mod.weight.numel() * hw * hw
        for name, mod in m.named_modules()
        if isinstance(mod, torch.nn.Conv2d) and not name.startswith("se_")
    )
    total = count_flops(m, torch.rand(1, c, hw, hw))
    assert total - convs >= (2 * k * k - 1) * c * hw * hw  # the aggregation THOP has no rule for, at least


class Lambda(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def test_noise_test():
    diff, band, inside = noise_test([0.50, 0.52, 0.51], [0.40, 0.41, 0.39])
    assert diff == pytest.approx(0.11) and inside is False
    diff, band, inside = noise_test([0.50, 0.60, 0.40], [0.45, 0.55, 0.50])
    assert inside is True and band > abs(diff)
    assert noise_test([0.5], [0.4])[2] is None


def test_paired_test_removes_the_shared_seed_spread():
    stock, variant = [0.517, 0.511, 0.509], [0.5175, 0.5117, 0.5097]  # seed effects shared, a small steady gain
    assert noise_test(variant, stock)[2] is True  # as independent samples the seed spread hides it
    diff, band, inside = paired_test(variant, stock)
    assert diff == pytest.approx(0.0019 / 3) and band == pytest.approx(2.869e-4, rel=1e-3) and inside is False  # t(2)
    assert paired_test([0.5, 0.6], [0.6, 0.5])[2] is True and paired_test([0.5], [0.4])[2] is None


def test_ops_mode_end_to_end(tmp_path):
    """`yolo-attn-bench ops` on a tiny input: every operator and the reference conv at every level, in one table."""
    args = ["ops", "--imgsz", "64", "--scales", "n", "--rounds", "2", "--runs", "1", "--warmup", "0", "--out", tmp_path]
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the mode runs with its --threads 1 and must hand this back
    try:
        assert main([str(a) for a in args]) == 0
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    raw = json.loads((tmp_path / "ops.json").read_text())
    names = ["Conv 3x3", *(op.name for op in BUILTINS)]  # the reference conv, then the operator table's rows
    assert [(r["level"], r["operator"]) for r in raw["rows"]] == [(lv, n) for lv in ("P3", "P4", "P5") for n in names]
    assert [r["shape"] for r in raw["rows"][:: len(names)]] == [[64, 8, 8], [128, 4, 4], [256, 2, 2]]
    for r in raw["rows"]:
        assert r["flops"] > 0 and r["infer_ms"] > 0 and r["train_ms"] > 0
        assert 0 < r["infer_memory_pass_share"] < 1 and 0 < r["train_memory_pass_share"] < 1
        assert len(r["infer_flop_ratios"]) == len(r["train_flop_ratios"]) == 2
        if r["operator"] == "Conv 3x3":
            assert r["infer_flop_ratios"] == r["train_time_ratios"] == [1.0, 1.0]
    (table,) = markdown_tables((tmp_path / "ops.md").read_text())  # the kernel research moved to dev/kernels.py
    assert len(table) == 2 + len(raw["rows"])
    # Kernel floor of CoT at P3 (the row after the reference): its per-FLOP ratio times the conv/matmul share.
    cot, floors = raw["rows"][1], [c.strip() for c in table[3].split("|")[1:-1]][-1]
    expected = [statistics.median(cot[f"{k}_flop_ratios"]) * (1 - cot[f"{k}_memory_pass_share"]) for k in TIMED]
    assert floors == f"{expected[0]:.2f}× / {expected[1]:.2f}×"


def test_profile_sorts_nodes_by_kind_and_layer():
    """The profile mode's node kinds and layer indices, from node names as ONNX Runtime and OpenVINO give them."""
    assert kind_of("Conv") == kind_of("GroupConvolution") == kind_of("MatMul") == "conv"
    assert kind_of("ReorderOutput") == kind_of("Slice") == kind_of("Concat") == "layout"
    assert kind_of("InstanceNormalization") == kind_of("MVN") == "norm"
    assert kind_of("Mul") == kind_of("QuickGelu") == kind_of("Subgraph") == "elementwise"
    assert layer_of("/model.16/key/conv/Conv_output_0_nchwc") == 16
    assert layer_of("__module.model.30.cv1.conv/aten::_convolution/Convolution") == 30
    assert layer_of("ReorderInput_token_50") is None


def test_profile_layer_rows_split_a_layer_and_price_its_flops():
    """A plugin layer's row: its nodes' time by kind, and the stock model's time per FLOP times its FLOPs."""
    nodes = {
        "/model.3/key/Conv": ("Conv", 2.0),
        "/model.3/Slice": ("Slice", 0.5),
        "/model.3/Mul": ("Mul", 1.0),
        "/model.3/Add": ("Add", 0.5),
        "/model.3/InstanceNormalization": ("InstanceNormalization", 0.25),
        "/model.30/Conv": ("Conv", 9.0),  # another layer
        "ReorderInput_token_1": ("ReorderInput", 4.0),  # between layers
    }
    (row,) = layer_rows(nodes, {3: ("CoTAttention", 0.2)}, ms_per_gflop=10.0)
    assert row == {
        "layer": 3, "module": "CoTAttention", "gflops": 0.2, "ms": 4.25, "fair_ms": 2.0,
        "conv": 2.0, "layout": 0.5, "norm": 0.25, "elementwise": 1.5,
    }  # fmt: skip


def test_openvino_runs_at_the_stated_precision(tmp_path):
    """The benchmark's OpenVINO models compile at `OPENVINO_PRECISION` (f32), not the CPU plugin's default (bf16 where
    the CPU has bf16 units), so the tables' "OpenVINO f32" is what ran."""
    pytest.importorskip("openvino")
    path = tmp_path / "conv.onnx"
    torch.onnx.export(torch.nn.Conv2d(3, 8, 3), (torch.zeros(1, 3, 16, 16),), path, dynamo=False)
    compiled = openvino_model(path, 1)
    assert compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name() == OPENVINO_PRECISION == "f32"
    assert compiled.get_property("INFERENCE_NUM_THREADS") == 1


@pytest.mark.exhaustive
def test_profile_mode_end_to_end(tmp_path):
    """`yolo-attn-bench profile` on a tiny input: per runtime, a row per CoordAtt layer whose kinds add up to its time,
    and the whole model against the stock model."""
    assert main(["profile", "--models", "yolov8n-ca", "--imgsz", "64", "--runs", "2", "--out", str(tmp_path)]) == 0
    tables = markdown_tables((tmp_path / "profile.md").read_text())
    assert len(tables) == 2  # ONNX Runtime, OpenVINO
    for table in tables:
        rows = [[c.strip() for c in line.split("|")[1:-1]] for line in table[2:]]
        assert [r[1] for r in rows] == ["5", "8", "11", "all"]  # the CoordAtt layers of yolov8-ca.yaml
        for r in rows[:-1]:
            assert r[2] == "CoordAtt" and float(r[4]) > 0, r  # the runtime's nodes were found for the layer
            shares = [float(c.rstrip("%")) for c in r[-len(KIND_NAMES) :]]
            assert sum(shares) == pytest.approx(100, abs=len(KIND_NAMES))  # rounded percentages


def test_memory_pass_share_splits_gemm_from_elementwise_time():
    x, w = torch.randn(256, 256), torch.randn(256, 256)
    assert memory_pass_share(lambda: x @ w) < 0.2  # one matrix product
    assert memory_pass_share(lambda: (x * 2 + 1).relu()) == 1  # passes over memory only


def test_fused_cpu_attention_counts_its_two_matrix_products():
    q, k, v = torch.rand(1, 2, 300, 16), torch.rand(1, 2, 120, 16), torch.rand(1, 2, 120, 16)
    sdpa = Lambda(lambda q: torch.nn.functional.scaled_dot_product_attention(q, k, v))
    assert count_flops(sdpa, q) == 2 * (2 * 300 * 120 * 16) * 2  # q kᵀ and (softmax) v, 2 heads


@pytest.mark.exhaustive
def test_deploy_mode_end_to_end(tmp_path):
    """`yolo-attn-bench deploy` on ONNX: a stock and a plugin model exported, run through AutoBackend and timed against
    each other; the report re-renders from its JSON; a bad `--python` is one line with exit status 2."""
    out = tmp_path / "out"
    args = ["deploy", "--models", "yolov8n", "yolov8n-ca", "--formats", "onnx", "--rounds", "1", "--runs", "1"]
    run([BENCH_BIN, *args, "--out", out], tmp_path)
    cells = json.loads((out / "deploy.json").read_text())["cells"]["onnx"]
    assert cells["yolov8n"]["ratio"] == 1.0 and cells["yolov8n-ca"]["ratio"] > 0
    for cell in cells.values():
        assert cell["runs"] and cell["box_err"] <= 1e-3 * cell["box_scale"] + 1e-4, cell
    md = (out / "deploy.md").read_text()
    assert "| onnx | " in md and "yolov8n-ca" in md
    (out / "deploy.md").unlink()
    run([BENCH_BIN, "deploy", "--report", out / "deploy.json", "--out", out], tmp_path)
    assert (out / "deploy.md").read_text() == md
    with pytest.raises(SystemExit) as e:  # argparse's own one-line usage error
        main(["deploy", "--python", "nonsense"])
    assert e.value.code == 2


# --- finetune mode: start check, end to end, report, preset, progress, Ctrl-C ---------------------------------------


@pytest.fixture(scope="module")
def stock_weights(tmp_path_factory) -> tuple[Path, Path]:
    """A stock yolov8n at the tiny data's 7 classes, calibrated so its outputs depend on the image; and its YAMLs."""
    folder = tmp_path_factory.mktemp("finetune_start")
    stock = identity_yaml(Entry("yolov8n", "yolov8n.yaml", "yolov8", True), 7, folder)
    return calibrated_checkpoint(str(stock), folder / "stock.pt"), folder


def test_start_check_tells_a_variant_that_does_not_start_as_stock(stock_weights):
    """The finetune mode's start check compares raw outputs, so it tells the identity start apart from a variant that
    changes the predictions even where both validate at mAP 0 (where an mAP comparison reads 0 = 0)."""
    weights, folder = stock_weights
    variant = Entry("yolov8n-ca", "yolov8n-ca.yaml", "yolov8", False, source="yolov8-ca.yaml")
    ref = start_outputs(str(folder / "yolov8n-id.yaml"), weights, 128)
    assert ref.std() > 0  # outputs that depend on the image: a difference would show
    same = start_outputs(str(identity_yaml(variant, 7, folder)), weights, 128)
    assert start_gap(same, ref) <= START_TOLERANCE
    changed = folder / "yolov8n-ca-changed.yaml"  # the same variant without `layer_scale: 0.0`
    changed.write_text("base: yolov8-ca.yaml\nnc: 7\n")
    assert start_gap(start_outputs(str(changed), weights, 128), ref) > 1000 * START_TOLERANCE


@pytest.mark.exhaustive
def test_finetune_mode_starts_every_variant_at_stock(tmp_path, tiny_data):
    """End to end on the tiny data: the stock model learns nothing there (mAP 0), so the start is checked on the raw
    outputs, which the run records per variant (a variant that did not start as stock exits 1 and fails `run`)."""
    args = ["finetune", "--data", tiny_data, "--pretrain-epochs", "1", "--epochs", "1", "--imgsz", "64"]
    args += ["--family", "yolo26", "--models", "yolo26n-ca", "--batch", "8", "--seeds", "1", "--jobs", "1"]
    args += ["--out", tmp_path / "out"]
    run([BENCH_BIN, *args], tmp_path, timeout=600)
    raw = json.loads((tmp_path / "out" / "finetune.json").read_text())
    assert raw["yolo26n"]["map0"] == raw["yolo26n-ca"]["map0"]
    assert raw["yolo26n"]["start_gap"] == 0 and 0 <= raw["yolo26n-ca"]["start_gap"] <= START_TOLERANCE
    assert len(raw["yolo26n-ca"]["map_seeds"]) == 1 and (tmp_path / "out" / "finetune.png").is_file()
    table = markdown_tables((tmp_path / "out" / "finetune.md").read_text())[0]
    assert [row.split("|")[1].strip().strip("*") for row in table[2:]] == ["yolo26n", "yolo26n-ca"]
    assert (tmp_path / "out" / "yolo26n-synth-shapes-tiny-64px-1ep.pt").is_file()  # the cached stock weights
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # the work folder moved into place


def finetune_entries(stock_maps: list, variant_maps: list, map0: float) -> list:
    results = [
        {"map0": map0, "map_seeds": maps, "map50_seeds": [m + 0.2 for m in maps]} for maps in (stock_maps, variant_maps)
    ]
    return [
        Entry("yolov8n", "", "yolov8", True, results=results[0]),
        Entry("yolov8n-ca", "", "yolov8", False, results=results[1] | {"start_gap": 0.0}),
    ]


def finetune_settings(seeds: int) -> dict:
    machine = {"cpu": "test", "cores": 2, "memory": "1 GiB", "os": "Linux", "versions": {"torch": "0"}}
    return {"machine": machine, "device": "cpu", "started": "now", "minutes": 1.0, "weights": "w.pt",
            "pretraining": "given", "recipe": ["lr0=0.1"], "epochs": 1, "imgsz": 128, "batch": 16, "seeds": seeds,
            "data": "d.yaml"}  # fmt: skip


@pytest.fixture()
def agg_backend():
    """The report switches matplotlib to Agg; restore the backend afterwards."""
    matplotlib = pytest.importorskip("matplotlib")
    backend = matplotlib.get_backend()
    yield
    matplotlib.use(backend)


def test_finetune_report_with_one_seed_gives_no_verdict(tmp_path, agg_backend):
    write_report(finetune_entries([0.30], [0.32], 0.25), finetune_settings(1), tmp_path)
    table = [line for line in (tmp_path / "finetune.md").read_text().splitlines() if line.startswith("| yolov8n-ca")]
    assert "+0.0200 (1 seed: no band, no verdict)" in table[0]
    assert not any(word in table[0] for word in ("better", "worse", "inside", "nan"))
    write_report(finetune_entries([0.30, 0.31, 0.30], [0.40, 0.41, 0.40], 0.25), finetune_settings(3), tmp_path)
    assert "better" in (tmp_path / "finetune.md").read_text()


def test_finetune_report_says_when_the_stock_model_ranks_nothing(tmp_path, agg_backend):
    write_report(finetune_entries([0.0, 0.001], [0.0, 0.002], 0.0), finetune_settings(2), tmp_path)
    text = (tmp_path / "finetune.md").read_text()
    assert f"below {MIN_STOCK_MAP}" in text and text.index("not learnt") < text.index("| model |")
    assert text.startswith("# yolo_attn fine-tune comparison\n\nMachine: test, 2 cores, 1 GiB RAM, Linux; torch 0.")
    write_report(finetune_entries([0.3, 0.31], [0.3, 0.32], 0.3), finetune_settings(2), tmp_path)
    assert "not learnt" not in (tmp_path / "finetune.md").read_text()


def test_finetune_chart_title_pluralises():
    assert "1 epoch " in chart_title(finetune_settings(1)) and "1 seed" in chart_title(finetune_settings(1))
    assert "3 seeds" in chart_title({**finetune_settings(3), "epochs": 3}) and "3 epochs" in chart_title(
        {**finetune_settings(3), "epochs": 3}
    )


def test_finetune_quick_preset_fills_defaults_only():
    ap = argparse.ArgumentParser()
    add_arguments(ap)
    args = ap.parse_args(["--preset", "quick", "--seeds", "4", "--family", "yolo11"])
    apply_preset(args)
    assert args.seeds == 4 and args.epochs == PRESETS["quick"]["epochs"] and args.imgsz == PRESETS["quick"]["imgsz"]
    assert args.models == ["yolo11n-ca", "yolo11n-cot"]
    plain = ap.parse_args([])
    apply_preset(plain)
    assert plain.epochs == ap.get_default("epochs") and plain.models is None


@pytest.mark.long  # the quick preset as a user runs it: minutes on 2 cores, plus building synth-shapes
def test_finetune_quick_preset_end_to_end(tmp_path):
    proc = subprocess.run([BENCH_BIN, "finetune", "--preset", "quick", "--out", tmp_path / "out"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=3600)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    epochs = PRESETS["quick"]["pretrain_epochs"]
    assert f"pretraining epoch 1/{epochs}" in proc.stdout and "left)" in proc.stdout  # progress with an estimate
    assert "[1/6]" in proc.stdout and "[6/6]" in proc.stdout  # 3 models x 2 seeds, one line per run
    text = (tmp_path / "out" / "finetune.md").read_text()
    names = [line.split("|")[1].strip(" *") for line in text.splitlines() if line.startswith("| ")]
    assert [n for n in names if n.startswith("yolov8n")] == ["yolov8n", "yolov8n-ca", "yolov8n-cot"]  # stock in bold


def test_progress_reports_time_left_and_never_goes_quiet():
    """A line on each announced step and, between steps, whenever `every` seconds passed without one; the time left
    comes from the estimate given up front until a unit is measured, then from the measured rate."""
    now, lines = [0.0], []
    progress = Progress(2, expected_seconds=80, every=20, echo=lines.append, clock=lambda: now[0])
    progress.update(0, "preparing", announce=True)
    assert lines == ["benchmark: preparing (0 s, about 80 s left)"]  # before any measurement: the estimate
    now[0] = 15.0
    progress.update(0.1, "pretraining epoch 1/2")  # the first step: its time is start-up, not a rate
    now[0] = 19.0
    progress.tick()
    assert len(lines) == 1  # not yet due
    now[0] = 21.0
    progress.update(0.25, "pretraining epoch 1/2")  # the second step gives the first measured time left: printed
    assert lines[-1] == "benchmark: pretraining epoch 1/2 (21 s, about 70 s left)"  # 40 s per unit since the first
    now[0] = 40.0
    progress.update(0.7, "pretraining epoch 2/2")
    assert len(lines) == 2  # neither announced nor due
    now[0] = 61.0
    progress.tick()
    assert lines[-1] == "benchmark: pretraining epoch 2/2 (61 s, about 33 s left)"  # 25 s / 0.6 units, counted down
    progress.update(2, "done", announce=True)
    assert lines[-1].endswith("(61 s, finishing)")
    with Progress(1, every=0.05, echo=lines.append) as ticking:  # the ticker thread prints without any update
        time.sleep(0.5)
    assert lines[-1] == "benchmark: starting (0 s, estimating the time left)" and not ticking._ticker.is_alive()


def interrupted(args: list, cwd: Path, after: str) -> tuple[subprocess.CompletedProcess, list]:
    """Start `yolo-attn-bench ARGS` in a session of its own, wait for a stdout line containing `after`, then press
    Ctrl-C as a terminal does (SIGINT to the whole process group); return the finished process and its stdout lines."""
    proc = subprocess.Popen([BENCH_BIN, *map(str, args)], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)  # fmt: skip
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if after in line:
                break
        assert proc.poll() is None, "".join(lines) + proc.stderr.read()
        os.killpg(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    lines += stdout.splitlines(keepends=True)
    return subprocess.CompletedProcess(proc.args, proc.returncode, "".join(lines), stderr), lines


@pytest.mark.parametrize("phase", ["pretraining", pytest.param("fine-tuning", marks=pytest.mark.exhaustive)])
def test_ctrl_c_stops_in_one_line_and_leaves_nothing_half_made(tmp_path, tiny_data, stock_weights, phase):
    """Ctrl-C in the pretraining run (in process) or among the fine-tuning workers: one line on stderr, exit status
    130, and the parent of `--out` as it was (no output folder, no work folder), so a rerun starts clean."""
    out = tmp_path / "out"
    args = ["finetune", "--data", tiny_data, "--imgsz", "64", "--batch", "8", "--models", "yolov8n-ca", "--seeds", "1"]
    if phase == "pretraining":
        args += ["--pretrain-epochs", "50", "--out", out]
        after = "pretraining epoch 1/50"
    else:
        args += ["--pretrained", stock_weights[0], "--epochs", "50", "--jobs", "2", "--out", out]
        after = "fine-tuning 2 models"
    proc, lines = interrupted(args, tmp_path, after)
    if phase == "pretraining":  # a progress line with the time left came first
        assert any(re.match(r"benchmark: pretraining epoch 1/50.*, about .+ left\)$", line) for line in lines), lines
    assert proc.returncode == 130, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [f"yolo-attn-bench: interrupted; wrote nothing to {out}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_free_threads_leave_out_busy_cores(monkeypatch):
    """The pretraining run takes the idle cores only: multi-threaded PyTorch on busy cores waits for its threads."""
    from yolo_attn.bench import timing

    monkeypatch.setattr(timing.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(timing.os, "getloadavg", lambda: (0.3, 0.0, 0.0))
    assert timing.free_threads(2) == 2 and timing.free_threads(1) == 1
    monkeypatch.setattr(timing.os, "getloadavg", lambda: (5.0, 0.0, 0.0))
    assert timing.free_threads(2) == 1


# --- the package's shape ------------------------------------------------------------------------------------------


def bench_imports() -> dict[str, list[tuple[str, str]]]:
    """Return, per module of `yolo_attn.bench`, the (module, name) pairs it imports from the plugin (every import
    statement, also inside functions; `import a.b` as (a.b, ""))."""
    folder = Path(yolo_attn.bench.__file__).parent
    graph = {}
    for path in sorted(folder.glob("*.py")):
        name = "yolo_attn.bench" + ("" if path.stem == "__init__" else f".{path.stem}")
        edges = []
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("yolo_attn"):
                edges += [(node.module, alias.name) for alias in node.names]
            elif isinstance(node, ast.Import):
                edges += [(alias.name, "") for alias in node.names if alias.name.startswith("yolo_attn")]
        graph[name] = edges
    return graph


def test_bench_imports_run_one_way_and_name_nothing_private():
    """No circle among the modules of `yolo_attn.bench` (a module imported by name or from) and no private name
    (`_x`) of another plugin module imported."""
    graph = bench_imports()
    modules = set(graph)
    private = [(m, f"{src}.{name}") for m, edges in graph.items() for src, name in edges if name.startswith("_")]
    assert not private
    deps = {}
    for m, edges in graph.items():
        targets = {src if src in modules else f"{src}.{name}" for src, name in edges}
        deps[m] = sorted(
            (targets & modules) - {m, "yolo_attn.bench"}
        )  # a submodule's import of its package is Python's
    assert len(deps) >= 18 and "yolo_attn.bench.runners" in deps["yolo_attn.bench.memory"]  # the check sees edges
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m: str, path: list) -> None:
        state[m] = 1
        for d in deps[m]:
            assert state.get(d) != 1, f"import circle: {' -> '.join([*path, m, d])}"
            if d not in state:
                visit(d, [*path, m])
        state[m] = 2

    for m in sorted(deps):
        if m not in state:
            visit(m, [])
