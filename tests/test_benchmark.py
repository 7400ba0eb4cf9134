"""The benchmark command on its tiniest setting, and the FLOP count it relies on.

The models and finetune modes train and time several models end to end (minutes on 2 cores): `exhaustive` marker.
The ops mode runs end to end in the fast set.
"""

import functools
import json
import statistics

import pytest
import torch
from helpers import BENCH_BIN, run
from ultralytics import YOLO
from ultralytics.utils.torch_utils import get_flops

from yolo_attn import CoordAtt, CoTAttention
from yolo_attn.bench.cli import main
from yolo_attn.bench.flops import count_flops
from yolo_attn.bench.ops import memory_pass_share
from yolo_attn.bench.report import noise_test, paired_test
from yolo_attn.bench.zoo import OTHER_TASKS, discover
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


def test_memory_pass_share_splits_gemm_from_elementwise_time():
    x, w = torch.randn(256, 256), torch.randn(256, 256)
    assert memory_pass_share(lambda: x @ w) < 0.2  # one matrix product
    assert memory_pass_share(lambda: (x * 2 + 1).relu()) == 1  # passes over memory only


def test_fused_cpu_attention_counts_its_two_matrix_products():
    q, k, v = torch.rand(1, 2, 300, 16), torch.rand(1, 2, 120, 16), torch.rand(1, 2, 120, 16)
    sdpa = Lambda(lambda q: torch.nn.functional.scaled_dot_product_attention(q, k, v))
    assert count_flops(sdpa, q) == 2 * (2 * 300 * 120 * 16) * 2  # q kᵀ and (softmax) v, 2 heads


@pytest.mark.exhaustive
def test_finetune_mode_starts_every_variant_at_stock(tmp_path, tiny_data):
    args = ["finetune", "--data", tiny_data, "--pretrain-epochs", "1", "--epochs", "1", "--imgsz", "64"]
    args += ["--family", "yolo26", "--models", "yolo26n-ca", "--batch", "8", "--seeds", "1", "--jobs", "1"]
    args += ["--out", tmp_path]
    run([BENCH_BIN, *args], tmp_path, timeout=600)  # exits non-zero when a variant does not start at stock
    raw = json.loads((tmp_path / "finetune.json").read_text())
    assert raw["yolo26n"]["map0"] == raw["yolo26n-ca"]["map0"]
    assert len(raw["yolo26n-ca"]["map_seeds"]) == 1 and (tmp_path / "finetune.png").is_file()
    table = markdown_tables((tmp_path / "finetune.md").read_text())[0]
    assert [row.split("|")[1].strip().strip("*") for row in table[2:]] == ["yolo26n", "yolo26n-ca"]
    assert (tmp_path / "yolo26n-synth-shapes-tiny-64px-1ep.pt").is_file()  # the cached stock weights


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
