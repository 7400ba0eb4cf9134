"""Pretrained weights survive insertion: every stock item transfers into plugin models (API and `yolo` command), the
identity start (`layer_scale: 0.0`) predicts and validates exactly as stock, fine-tunes resume and reload safely."""

import re
import sys
from pathlib import Path

import cv2
import pytest
import torch
from helpers import SANDBOX, YOLO_BIN, logged, outputs, randomise_norms, run
from ultralytics import YOLO
from ultralytics.nn.tasks import DetectionModel

FAST = ["imgsz=64", "batch=8", "workers=0", "plots=False", "amp=False", "device=cpu", "val=True"]


def transferred(messages: list) -> tuple:
    """Return (N, M) of Ultralytics' 'Transferred N/M items' line."""
    match = next(re.search(r"Transferred (\d+)/(\d+) items", m) for m in messages if "Transferred" in m)
    return int(match.group(1)), int(match.group(2))


@pytest.fixture(scope="module")
def stock_pt(tmp_path_factory) -> Path:
    """A stock YOLO11n checkpoint of the tiny data's class count, with random BN statistics and affine parameters (so
    a weight or norm landing in the wrong layer shows in the outputs), saved as Ultralytics saves checkpoints."""
    torch.manual_seed(0)
    model = YOLO("yolo11n.yaml")
    model.model = randomise_norms(DetectionModel("yolo11n.yaml", nc=7, verbose=False))
    path = tmp_path_factory.mktemp("stock") / "yolo11n-stock.pt"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def identity_yaml(tmp_path_factory) -> Path:
    """yolo11-cot (a full YAML) plus CoordAtt and AttnConv by reference, all starting as the identity."""
    folder = tmp_path_factory.mktemp("identity")
    path = folder / "yolo11-cot-id.yaml"
    path.write_text(
        "base: yolo11-cot.yaml\nnc: 7 # synth-shapes\nlayer_scale: 0.0\n"
        "insert:\n  - [4, CoordAtt, []]\n  - [16, AttnConv, []]\n"
    )
    return folder / "yolo11n-cot-id.yaml"  # scale n, found by Ultralytics' scale-free retry


def replaced_convs(stock: torch.nn.Module, plugin: torch.nn.Module) -> set:
    """Return the stock keys that CoT twins have no counterpart for: each bottleneck's 3x3 conv that CoT replaces,
    and its first conv where the twin runs at another width (C3k2's plain bottleneck: c -> c/2 in stock, c -> c)."""
    from ultralytics.nn.modules.block import Bottleneck

    layer_map, target = plugin.yaml["layer_map"], plugin.state_dict()
    new_of = {j: i for i, j in enumerate(layer_map) if j is not None}
    twins = [layer_map[i] for i, m in enumerate(plugin.model) if type(m).__name__ in ("C2f_CoT", "C3k2_CoT")]
    fresh = set()
    for i in twins:
        for name, m in stock.model[i].named_modules():
            if isinstance(m, Bottleneck):
                fresh |= {f"model.{i}.{name}.cv2.{key}" for key in m.cv2.state_dict()}
                for key, value in m.cv1.state_dict().items():
                    moved = f"model.{new_of[i]}.{name}.cv1.{key}"
                    if moved not in target or target[moved].shape != value.shape:
                        fresh.add(f"model.{i}.{name}.cv1.{key}")
    return fresh


@pytest.mark.parametrize(
    "stock, plugin",
    [
        ("yolo11n.yaml", "yolo11n-ca.yaml"),
        ("yolo11n.yaml", "yolo11n-cot-neck.yaml"),
        ("yolo26n-seg.yaml", "yolo26n-seg-cot.yaml"),
        ("yolo26n-cls.yaml", "yolo26n-cls-cot.yaml"),
        ("yolov8n.yaml", "yolov8n-c2f-cot.yaml"),
        ("yolo26s.yaml", "yolo26s-c3k2-cot.yaml"),
    ],
)
def test_every_stock_item_transfers(stock, plugin):
    source, target = YOLO(stock).model, YOLO(plugin).model
    fresh = replaced_convs(source, target)
    n, m = transferred(logged(lambda: target.load(source)))
    assert m == len(target.state_dict())
    assert n == len(source.state_dict()) - len(fresh), f"{plugin}: {n}/{len(source.state_dict())} items transferred"
    assert ("c2f-cot" in plugin or "c3k2-cot" in plugin) == bool(fresh)
    weights = dict(target.named_parameters())
    for i, j in enumerate(target.yaml["layer_map"]):  # spot check: the first conv of every stock layer moved along
        if j is not None and f"model.{i}.conv.weight" in weights:
            assert torch.equal(weights[f"model.{i}.conv.weight"], source.state_dict()[f"model.{j}.conv.weight"])


def test_identity_start_predicts_as_stock(identity_yaml):
    torch.manual_seed(0)
    stock = DetectionModel("yolo11n.yaml", nc=7, verbose=False).eval()  # the class count of the YAML below
    for m in stock.modules():  # non-trivial BN statistics, so a misplaced layer would show
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 1.5)
    model = YOLO(str(identity_yaml)).model
    model.load(stock)
    model.eval()
    assert sum(type(m).__name__ in ("CoTAttention", "CoordAtt", "AttnConv") for m in model.model) == 4
    for shape in [(1, 3, 64, 64), (2, 3, 96, 160)]:
        x = torch.rand(shape)
        with torch.no_grad():
            a, b = stock(x)[0], model(x)[0]
        assert (a - b).abs().max() <= 1e-5 * a.abs().max()
    model.train()
    loss = sum(t.float().pow(2).mean() for t in outputs(model(torch.rand(2, 3, 64, 64))))  # training-mode outputs
    loss.backward()
    gammas = [m.gamma for m in model.modules() if getattr(m, "gamma", None) is not None]
    assert len(gammas) == 4 and all(g.grad is not None and g.grad.abs().sum() > 0 for g in gammas)


def test_across_scales_warns_which_stock_layers_missed():
    messages = logged(lambda: YOLO("yolo11s-ca.yaml").model.load(YOLO("yolo11n.yaml").model))
    warning = [m for m in messages if "did not (fully) transfer" in m]
    assert len(warning) == 1 and "stock layers 0, 1, 2" in warning[0]
    messages = logged(lambda: YOLO("yolo11n-cot.yaml").model.load(YOLO("yolov8n.yaml").model))  # unrelated model
    assert sum("neither this model's stock model" in m for m in messages) == 1


def test_yolo_train_from_stock_weights_transfers_all_and_starts_at_stock(stock_pt, identity_yaml, tiny_data):
    project = SANDBOX / "transfer"
    args = [f"model={identity_yaml}", f"pretrained={stock_pt}", f"data={tiny_data}", "epochs=1", *FAST]
    out = run([YOLO_BIN, "train", *args, f"project={project}", "name=ft", "exist_ok=True"], cwd=identity_yaml.parent)
    n_stock = len(YOLO(stock_pt).model.state_dict())
    assert f"Transferred {n_stock}/" in out.stdout + out.stderr

    # Epoch 0: the plugin model with stock weights validates exactly as the stock model.
    model = YOLO(str(identity_yaml))
    model.load(str(stock_pt))
    kwargs = dict(data=tiny_data, imgsz=64, batch=8, workers=0, plots=False, device="cpu", verbose=False)
    kwargs.update(project=project)
    ours, stock = model.val(**kwargs, name="val_ours"), YOLO(stock_pt).val(**kwargs, name="val_s")
    assert ours.results_dict == stock.results_dict
    images = sorted((SANDBOX / "datasets" / "synth-shapes-tiny" / "images" / "val").glob("*.jpg"))
    x = torch.stack([torch.from_numpy(cv2.resize(cv2.imread(str(f)), (64, 64))).permute(2, 0, 1) for f in images])
    with torch.no_grad():  # the raw head outputs on the val images, before any thresholding
        a, b = model.model.eval()(x.float() / 255)[0], YOLO(stock_pt).model.float().eval()(x.float() / 255)[0]
    assert (a - b).abs().max() <= 1e-5 * b.abs().max()

    # The fine-tuned checkpoint reloads in a fresh process under restricted (weights_only) loading.
    best = project / "ft" / "weights" / "best.pt"
    script = f"from ultralytics import YOLO; m = YOLO({str(best)!r}); print(m.model.yaml['layer_map'].count(None))"
    reload = run([sys.executable, "-c", script], cwd=SANDBOX, env={"ULTRALYTICS_SAFE_LOAD": "1"})
    assert reload.stdout.strip().splitlines()[-1] == "4"


@pytest.mark.exhaustive
def test_fine_tune_resumes(stock_pt, identity_yaml, tiny_data):
    project = SANDBOX / "transfer"

    def stop_after_first_epoch(trainer):
        if trainer.epoch == 0:
            raise KeyboardInterrupt  # last.pt of epoch 1 is saved before this callback runs

    model = YOLO(str(identity_yaml))
    model.add_callback("on_fit_epoch_end", stop_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        model.train(data=tiny_data, epochs=2, pretrained=str(stock_pt), project=project, name="resume",
                    exist_ok=True, imgsz=64, batch=8, workers=0, plots=False, amp=False, device="cpu")  # fmt: skip
    last = project / "resume" / "weights" / "last.pt"
    run([YOLO_BIN, "train", "resume", f"model={last}"], cwd=SANDBOX)
    rows = (project / "resume" / "results.csv").read_text().strip().splitlines()
    assert len(rows) == 3  # header + 2 epochs
    assert YOLO(project / "resume" / "weights" / "best.pt").model.yaml["layer_scale"] == 0.0


def test_variant_to_variant_transfers_the_shared_stock_layers():
    source, target = YOLO("yolo11n-ca.yaml").model, YOLO("yolo11n-cot.yaml").model  # fine-tuned CA -> CoT, say
    n, _ = transferred(logged(lambda: target.load(source)))
    assert n == len(YOLO("yolo11n.yaml").model.state_dict())


# ---- the transfer lines the README quotes -----------------------------------------------------------------------


def transfer_lines(messages: list) -> tuple:
    """Return (N, M) of Ultralytics' "Transferred N/M items" line and the plugin's lines about the rest."""
    n, m = next(map(int, re.search(r"Transferred (\d+)/(\d+) items", s).groups()) for s in messages if "Transferr" in s)
    return n, m, [s for s in messages if "yolo_attn:" in s]


@pytest.fixture(scope="module")
def stock_yolo11n(tmp_path_factory) -> Path:
    """A stock YOLO11n checkpoint (nc 80) built in-process and saved as Ultralytics' checkpoint dict: no download."""
    path = tmp_path_factory.mktemp("stock") / "yolo11n-stock.pt"
    torch.save({"model": YOLO("yolo11n.yaml").model.half(), "train_args": {}}, path)
    return path


@pytest.mark.parametrize("layer_scale, n, m", [("", 499, 569), ("layer_scale: 0.0\n", 499, 571)])
def test_readme_transfer_line(tmp_path, stock_yolo11n, layer_scale, n, m):
    """The README quotes these lines: yolo11n-cot from stock yolo11n weights, with and without the identity start."""
    (tmp_path / "yolo11n-cot-x.yaml").write_text(f"base: yolo11n-cot.yaml\n{layer_scale}")
    model = YOLO(str(tmp_path / "yolo11n-cot-x.yaml"))
    messages = logged(lambda: model.load(str(stock_yolo11n)))
    assert f"Transferred {n}/{m} items from pretrained weights" in messages
    if not layer_scale:  # the README quotes the plain case, both lines
        readme = " ".join((Path(__file__).parents[1] / "README.md").read_text().split())
        assert f"Transferred {n}/{m} items" in readme and f"yolo_attn: {n}/{m} items transferred" in readme
    assert transfer_lines(messages)[2] == [
        f"yolo_attn: {n}/{m} items transferred; the other {m - n} start fresh: {m - n} of the inserted layers 7, 10 "
        "(new)"
    ]


def test_transfer_with_another_class_count_names_the_head_items(tmp_path, stock_yolo11n):
    (tmp_path / "yolo11n-cot-nc3.yaml").write_text("base: yolo11n-cot.yaml\nnc: 3\n")
    model = YOLO(str(tmp_path / "yolo11n-cot-nc3.yaml"))
    n, m, ours = transfer_lines(logged(lambda: model.load(str(stock_yolo11n))))
    assert len(ours) == 1 and f"{n}/{m} items transferred; the other {m - n} start fresh" in ours[0]
    counts = [int(c) for c in re.findall(r"[:;] (\d+) of the", ours[0])]
    assert sum(counts) == m - n and len(counts) == 2, ours  # inserted layers + head
    head = [k for k in model.model.state_dict() if re.fullmatch(r"model\.25\.cv3\.\d\.2\.(weight|bias)", k)]
    assert "the weights have nc=80, this model nc=3" in ours[0] and all(k in ours[0] for k in head) and len(head) == 6


def test_transfer_across_scales_counts_the_complement_of_n_of_m():
    source, target = YOLO("yolo11n.yaml").model, YOLO("yolo11s-ca.yaml").model
    n, m, ours = transfer_lines(logged(lambda: target.load(source)))
    inserted = int(re.search(r"(\d+) of the inserted layers", ours[0]).group(1))
    missing = int(re.search(r"\((\d+) items of another shape\)", ours[1]).group(1))
    assert inserted + missing == m - n and "did not (fully) transfer" in ours[1], ours
