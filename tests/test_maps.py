"""Attention maps (`yolo_attn.attention_maps`, `yolo-attn maps`): known answers from the operators' equations, shapes
and ranges for every operator, the model left untouched, what the pictures are drawn from (raw ranges, contrast, the
flat flag, per-panel and shared colour scales), the checkpoint's training imgsz as the default, and the command
writing its PNGs."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import CA_YAML, YOLO_ATTN_BIN, randomise_norms, run
from torch import nn

from yolo_attn.attn_conv import AttnConv
from yolo_attn.coord_att import CoordAtt
from yolo_attn.cot import C2f_CoT, C3k2_CoT, CoTAttention
from yolo_attn.maps import FLAT_CONTRAST, attention_maps, colour_scales, default_imgsz, load_model, save_figure


def image(h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    """A random HxWx3 uint8 BGR image."""
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_coord_att_map_peaks_on_the_row_its_height_attention_picks():
    """a_h is made to peak at feature row 5 (and a_w flat): the map's maximum lies on the image rows of feature row 5.

    Hand-set weights: the squeeze output f carries a one-hot marker of row 5 in channel 0 (the stem writes a bright
    horizontal band there), attn_h turns channel 0 into a large logit, attn_w is zero (a_w = 0.5 everywhere).
    """
    torch.manual_seed(0)
    ca = CoordAtt(8, 8)
    stem = nn.Conv2d(3, 8, 1)  # stride 1: feature rows are image rows
    net = nn.Sequential(stem, ca)
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        stem.weight[:, 0] = 1.0  # every channel = the red channel (BGR index 2 -> RGB index 0)
        ca.squeeze.conv.weight[0, :] = 1.0  # f_0 = h_swish(BN(sum of channels)) ~ row brightness
        ca.squeeze.bn.weight.fill_(1.0)
        ca.squeeze.bn.running_var.fill_(1.0)
        ca.attn_h.weight[:, 0] = 20.0  # a_h[c, y] = σ(20 f_0[y] + b)
        ca.attn_h.bias.fill_(-10.0)
    img = np.zeros((32, 32, 3), np.uint8)
    img[5, :, 2] = 255  # a bright red row 5
    x = torch.from_numpy(img[..., ::-1].copy()).permute(2, 0, 1).float()[None] / 255
    (m,) = attention_maps(net, x)
    assert m.feature_size == (32, 32) and m.name == "CoordAtt" and m.index == 1
    assert np.unravel_index(m.map.argmax(), m.map.shape)[0] == 5
    assert m.map[5].min() == pytest.approx(1.0) and m.map[20].max() < 0.05  # a_w flat: the whole row is the peak


def _mapped(operator: type, size: tuple, seed: int) -> tuple:
    """A 16-channel `operator` (norms randomised) behind a stride-2 conv stem, its map on a random image of `size`,
    and the stem's features it saw: (layer, map, features)."""
    torch.manual_seed(seed)
    layer = randomise_norms(operator(16, 16)).eval()
    net = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), layer)
    x = torch.rand(1, 3, *size)
    (m,) = attention_maps(net, x)
    with torch.no_grad():
        return layer, m, net[0](x)


def test_coord_att_map_is_the_mean_outer_product_of_its_directional_attentions():
    """On a tensor source the raw map equals mean_c σ(a_h) σ(a_w) computed by hand from the layer's convs."""
    ca, m, f = _mapped(CoordAtt, (64, 96), seed=1)
    with torch.no_grad():
        z = torch.cat((f.mean(3, keepdim=True), f.mean(2, keepdim=True).transpose(2, 3)), 2)
        s = ca.squeeze(z)
        a_h = ca.attn_h(s[:, :, :32]).sigmoid()
        a_w = ca.attn_w(s[:, :, 32:].transpose(2, 3)).sigmoid()
        ref = (a_h * a_w).mean(1)[0].numpy()
    np.testing.assert_allclose(m.raw, ref, rtol=1e-5, atol=1e-6)
    assert m.map.shape == (64, 96) and m.map.min() == 0 and m.map.max() == pytest.approx(1)
    assert ref.min() - 1e-6 <= m.range[0] < m.range[1] <= ref.max() + 1e-6  # bilinear upsampling stays inside


def test_cot_map_is_the_fused_dynamic_context():
    """CoTAttention's raw map is mean_c |a_dyn[c] K2[c]|, written from the block's equations (K2 and the fusion)."""
    cot, m, f = _mapped(CoTAttention, (40, 56), seed=2)
    with torch.no_grad():
        k1 = cot.key(f)
        a = cot.attn_norm(cot.attn_expand(cot.attn_reduce(torch.cat((f, k1), 1)))).reshape(1, 2, 9, 20, 28)
        v = torch.nn.functional.pad(cot.value(f), (1, 1, 1, 1))
        k2 = torch.zeros(1, 16, 20, 28)
        for c in range(16):
            for d in range(9):
                k2[0, c] += a[0, c % 2, d] * v[0, c, d // 3 : d // 3 + 20, d % 3 : d % 3 + 28]
        k2 = cot.dyn_act(cot.dyn_bn(k2))
        z = cot.se_expand(cot.se_reduce(k1.mean((2, 3), keepdim=True) + k2.mean((2, 3), keepdim=True)))
        w_dyn = torch.softmax(z.reshape(1, 16, 2), 2)[..., 0].reshape(1, 16, 1, 1)
        ref = (w_dyn * k2).abs().mean(1)[0].numpy()
    np.testing.assert_allclose(m.raw, ref, rtol=1e-4, atol=1e-6)


def test_attn_conv_map_is_the_local_context_weight_magnitude():
    """AttnConv's raw map is mean_c |tanh(d^-0.5 gate(Q ⊙ K))| of its local branch."""
    layer, m, f = _mapped(AttnConv, (32, 48), seed=3)
    with torch.no_grad():
        group = layer.local_groups[0]
        q, k, _ = group.dw(group.qkv(layer.norm(f))).chunk(3, 1)
        ref = torch.tanh(group.gate(q * k) * group.scale).abs().mean(1)[0].numpy()
    np.testing.assert_allclose(m.raw, ref, rtol=1e-5, atol=1e-6)


def test_attn_conv_without_local_branch_shows_global_attention_received():
    """With global_ratio=1 the map is the attention each pooled cell receives: it sums to H·W over the pooled grid."""
    torch.manual_seed(4)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), AttnConv(16, 16, global_ratio=1.0, pool_size=4))
    (m,) = attention_maps(net, torch.rand(1, 3, 32, 32))  # 16x16 features, a 4x4 pooled grid
    cells = m.raw[::4, ::4]  # one value per pooled cell, spread over its 4x4 pixels
    assert cells.sum() == pytest.approx(16 * 16 * 1.0, rel=1e-4)  # every query's softmax sums to 1
    np.testing.assert_array_equal(m.raw, np.kron(cells, np.ones((4, 4), np.float32)))


def test_attn_conv_global_map_uses_the_layers_own_key_grid_under_max_key_grid():
    """With max_key_grid the layer pools its keys with a wider stride than pool_size at large inputs; the map shows
    the cells the layer attended to. 85x65 features, pool 4, max_key_grid 4: strides (22, 17), a 4x4 key grid (the
    pool-size computation gave a 22x17 grid of 4x4 cells). Checked against a reference written from the equations and
    against the layer: its attention weights are the ones its forward applies to the values."""
    torch.manual_seed(7)
    layer = randomise_norms(AttnConv(16, 16, global_ratio=1.0, pool_size=4, max_key_grid=4)).eval()
    net = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), layer)
    x = torch.rand(1, 3, 170, 130)
    (m,) = attention_maps(net, x)
    group = layer.global_group
    with torch.no_grad():
        t = layer.norm(net[0](x))
        assert t.shape[2:] == (85, 65) and group.key_stride(85, 65) == (22, 17)
        pooled = torch.nn.functional.avg_pool2d(t, (22, 17), (22, 17), ceil_mode=True, count_include_pad=False)
        q = group.q(t).reshape(1, group.heads, group.head_dim, -1).transpose(-1, -2)
        k = group.kv(pooled)[:, : group.heads * group.head_dim].reshape(1, group.heads, group.head_dim, -1)
        received = torch.softmax((q * group.scale) @ k, -1).sum(2).mean(1).reshape(4, 4).numpy()
        weights, grid = group.attention_weights(t)
        _, _, v, _ = group.queries_keys_values(t)
        own = (weights @ v).transpose(-1, -2).reshape(1, -1, 85, 65)
        torch.testing.assert_close(own, group(t), rtol=1e-5, atol=1e-6)  # the weights forward uses
    assert grid == (4, 4) and received.sum() == pytest.approx(85 * 65, rel=1e-4)
    ref = np.kron(received, np.ones((22, 17), np.float32))[:85, :65]  # each cell spread over its pixels, edges cut
    np.testing.assert_allclose(m.raw, ref, rtol=1e-5, atol=1e-6)


class Ramp(nn.Module):
    """A layer that changes nothing and supplies its own map: `level` plus `step` times a horizontal ramp in [0, 1]."""

    def __init__(self, level: float, step: float):
        super().__init__()
        self.level, self.step = level, step

    def forward(self, x):
        return x

    def attention_map(self, x, y):
        ramp = torch.linspace(0, 1, x.shape[3]).expand(x.shape[0], x.shape[2], -1)
        return self.level + self.step * ramp


def ramp_maps(shared: bool = False) -> tuple:
    """Maps of three Ramp layers (near-flat 1 + 0.001 r, 20 % contrast, a wide 0-5 range) and their colour scales."""
    net = nn.Sequential(nn.Conv2d(3, 8, 1), Ramp(1.0, 1e-3), Ramp(0.8, 0.2), Ramp(0.0, 5.0))
    maps = attention_maps(net, torch.rand(1, 3, 32, 48), include=[1, 2, 3])
    return maps, colour_scales(maps, shared)


def test_maps_carry_their_raw_range_contrast_and_flat_flag():
    """Every map carries what its colour bar and title show: the raw min-max over the image, the relative contrast
    (max − min) / max(|min|, |max|) and the flat flag (contrast below 5 %, as `yolo-attn maps --help` says); a real
    operator's map too."""
    from yolo_attn.cli import MAPS_HELP

    assert FLAT_CONTRAST == 0.05 and f"below {FLAT_CONTRAST:.0%} is titled FLAT" in MAPS_HELP
    (flat, tilted, wide), _ = ramp_maps()
    assert flat.range == pytest.approx((1.0, 1.001)) and flat.contrast == pytest.approx(1e-3 / 1.001, rel=1e-3)
    assert flat.flat and not flat.uniform and flat.map.max() == pytest.approx(1)  # stretched, but flagged
    assert tilted.range == pytest.approx((0.8, 1.0)) and tilted.contrast == pytest.approx(0.2) and not tilted.flat
    assert wide.range == pytest.approx((0.0, 5.0)) and wide.contrast == pytest.approx(1.0) and not wide.flat
    _, m, _ = _mapped(CoTAttention, (40, 56), seed=2)
    lo, hi = float(m.raw.min()), float(m.raw.max())  # bilinear resizing stays inside the raw values
    assert lo - 1e-6 <= m.range[0] < m.range[1] <= hi + 1e-6
    assert m.contrast == pytest.approx((m.range[1] - m.range[0]) / max(map(abs, m.range)))
    assert m.flat == (m.contrast < FLAT_CONTRAST)


def test_flat_map_is_drawn_on_a_scale_widened_to_the_threshold():
    """Per panel, a map spans its own range, except a near-constant one: its scale is widened about its middle to 5 %
    of its magnitude, so its colours span only contrast / 5 % of the bar (here 2 %)."""
    maps, scales = ramp_maps()
    (vmin, vmax), tilted, wide = scales
    assert vmin < 1.0 and 1.001 < vmax and (vmin + vmax) / 2 == pytest.approx(1.0005)
    assert (vmax - vmin) == pytest.approx(FLAT_CONTRAST * 1.001, rel=1e-3)
    assert tilted == pytest.approx((0.8, 1.0)) and wide == pytest.approx((0.0, 5.0))


def test_shared_scale_gives_every_panel_one_absolute_scale(tmp_path):
    """shared_scale: every panel from the lowest minimum to the highest maximum of all maps; the figure is written."""
    maps, scales = ramp_maps(shared=True)
    assert scales == [pytest.approx((0.0, 5.0))] * 3
    for shared in (False, True):
        path = save_figure(maps, image(32, 48), tmp_path / f"shared-{shared}.png", "ramps", shared_scale=shared)
        assert path.stat().st_size > 1000


@pytest.mark.parametrize("cls", [CoordAtt, CoTAttention, AttnConv])
def test_identity_start_gives_a_uniform_map(cls):
    """layer_scale=0.0: the layer is the identity; it re-weights / contributes nothing, so its map is flat (zeros)."""
    torch.manual_seed(5)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), randomise_norms(cls(16, 16, layer_scale=0.0)))
    (m,) = attention_maps(net, image(), imgsz=64)
    assert m.uniform and not m.map.any() and m.map.shape == (48, 64)


def test_coord_att_layer_scale_keeps_the_shape_of_the_map():
    """A uniform γ only rescales 1 + γ(a_h a_w − 1) around 1: the normalised map equals the paper form's."""
    torch.manual_seed(6)
    paper = randomise_norms(CoordAtt(16, 16))
    scaled = CoordAtt(16, 16, layer_scale=0.3)
    scaled.load_state_dict({**paper.state_dict(), "gamma": torch.full((16, 1, 1), 0.3)})
    stem = nn.Conv2d(3, 16, 3, 2, 1)
    maps = []
    for layer in (paper, scaled):
        net = nn.Sequential(stem, layer)
        maps.append(attention_maps(net, image(), imgsz=64)[0])
    assert not maps[0].uniform
    # Equal up to float32 rounding of 1 + γ(w − 1), which is large against the small range of a random layer's map.
    np.testing.assert_allclose(maps[0].map, maps[1].map, atol=5e-3)


def test_blocks_give_one_map_per_inner_cot_and_third_party_layers_the_generic_map(monkeypatch):
    """C2f_CoT / C3k2_CoT: one map per inner CoTAttention; a third-party operator in the plugin's table gets
    ||y − x|| / ||x||, and a layer that defines `attention_map` (here one picked by index) supplies its own."""
    import yolo_attn.maps

    torch.manual_seed(7)

    class Shift(nn.Module):  # a stand-in third-party operator: changes its input by 1 on the right half only
        def forward(self, x):
            y = x.clone()
            y[..., x.shape[-1] // 2 :] += 1
            return y

    class OwnMap(nn.Module):  # a layer that knows its own map: the first channel of its output
        def forward(self, x):
            return x

        def attention_map(self, x, y):
            return y[:, 0]

    monkeypatch.setattr(yolo_attn.maps, "_registered_names", lambda: {"CoordAtt", "Shift"})  # as if registered
    stem = nn.Conv2d(3, 32, 3, 2, 1)
    net = nn.Sequential(stem, C2f_CoT(32, 32, n=2), C3k2_CoT(32, 32, c3k=True), Shift(), OwnMap(), nn.Identity())
    maps = attention_maps(net, image(64, 64), imgsz=64, include=[4])
    assert [m.key for m in maps] == [
        (1, "C2f_CoT.m.0.cv2"),
        (1, "C2f_CoT.m.1.cv2"),
        (2, "C3k2_CoT.m.0.m.0.cv2"),
        (2, "C3k2_CoT.m.0.m.1.cv2"),
        (3, "Shift"),
        (4, "OwnMap"),
    ]
    for m in maps:
        assert m.map.shape == (64, 64) and m.map.dtype == np.float32 and 0 <= m.map.min() and m.map.max() <= 1
    shift, own = maps[-2:]
    assert shift.raw[:, :16].max() == 0 and shift.raw[:, 16:].min() > 0  # changed exactly where it acts
    with torch.no_grad():
        y = net[:4].eval()(torch.from_numpy(image(64, 64)[..., ::-1].copy()).permute(2, 0, 1).float()[None] / 255)
    np.testing.assert_allclose(own.raw, y[0, 0].numpy(), rtol=1e-5, atol=1e-6)


def test_by_reference_yolo_model_maps_and_model_unchanged(tmp_path):
    """A `base: yolov8.yaml` model with all three operators: a map per layer at the image's size, in [0, 1], and the
    model's state dict, train/eval modes and hooks exactly as before the call."""
    from ultralytics import YOLO

    cfg = tmp_path / "yolov8n-maps.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {"base": "yolov8.yaml", "insert": [[4, "CoordAtt", []], [6, "CoTAttention", []], [9, "AttnConv", []]]}
        )
    )
    model = YOLO(str(cfg))
    net = model.model
    net.train()
    net.model[3].eval()  # a mixed state must come back as it was
    before = {k: v.clone() for k, v in net.state_dict().items()}
    modes = [m.training for m in net.modules()]
    maps = attention_maps(model, image(60, 100), imgsz=96)
    assert [(m.index, m.name) for m in maps] == [(5, "CoordAtt"), (8, "CoTAttention"), (12, "AttnConv")]
    assert [m.feature_size for m in maps] == [(8, 12), (4, 6), (2, 3)]  # 60x100 -> 58x96 -> padded to 64x96
    for m in maps:
        assert m.map.shape == (60, 100) and 0 <= m.map.min() and m.map.max() <= 1
    assert [m.training for m in net.modules()] == modes
    assert all(not m._forward_hooks for m in net.modules())
    after = net.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    # A checkpoint path (what the command line gets) gives the maps of the model it holds. (Not those of `model`:
    # checkpoints store half-precision weights, and a random model's maps are flat enough for that to show.)
    model.save(tmp_path / "maps.pt")
    from_path = attention_maps(str(tmp_path / "maps.pt"), image(60, 100), imgsz=96)
    from_object = attention_maps(YOLO(str(tmp_path / "maps.pt")), image(60, 100), imgsz=96)
    assert [m.key for m in from_path] == [m.key for m in maps]
    for a, b in zip(from_path, from_object):
        np.testing.assert_array_equal(a.map, b.map)


def test_imgsz_defaults_to_the_checkpoints_training_size(tmp_path):
    """A checkpoint trained at imgsz 96 is drawn at 96 unless told otherwise; a model YAML keeps 640."""
    from ultralytics import YOLO

    model = YOLO(str(CA_YAML).replace("yolov8-", "yolov8n-"))
    assert default_imgsz(model.model) == 640
    model.ckpt = {"train_args": {"imgsz": 96}}  # what a training run records; model.save keeps it
    model.save(tmp_path / "trained96.pt")
    net = load_model(tmp_path / "trained96.pt")
    assert default_imgsz(net) == 96
    at_default, at_96, at_640 = (attention_maps(net, image(60, 100), imgsz=size)[0] for size in (None, 96, 640))
    assert at_default.feature_size == at_96.feature_size == (8, 12) != at_640.feature_size  # CoordAtt at P3
    np.testing.assert_array_equal(at_default.raw, at_96.raw)
    assert default_imgsz(nn.Conv2d(3, 8, 1)) == 640  # a bare module: nothing recorded


def test_letterbox_padding_is_cut_off():
    """A wide image is padded top and bottom; the map covers only the image: a row-peaked raw map keeps its row."""
    net = nn.Sequential(nn.Conv2d(3, 8, 1), CoordAtt(8, 8))
    from yolo_attn.maps import preprocess

    x, original, crop = preprocess(image(30, 64), imgsz=64, stride=32)
    assert x.shape == (1, 3, 32, 64) and original.shape == (30, 64, 3) and crop == (1, 0, 30, 64)
    (m,) = attention_maps(net, image(30, 64), imgsz=64)
    assert m.map.shape == (30, 64) and m.feature_size == (32, 64)


def test_cli_writes_one_png_per_image(tmp_path, tiny_data, monkeypatch, capsys):
    """From an empty directory `yolo-attn maps source=DIR model=YAML` writes a PNG per image into runs/maps/maps, and
    says so (with the imgsz used); a second run (in-process, with --model/--source/--shared-scale) writes into a new run
    folder."""
    from ultralytics.utils import DATASETS_DIR

    from yolo_attn.cli import main

    src = tmp_path / "images"  # two of the tiny data set's images, plus a file that is not an image
    src.mkdir()
    for image in sorted((DATASETS_DIR / "synth-shapes-tiny" / "images" / "val").iterdir())[:2]:
        shutil.copy(image, src)
    (src / "notes.txt").write_text("not an image")
    images = sorted(src.glob("*.jpg"))
    cwd = tmp_path / "empty"
    cwd.mkdir()
    proc = run([YOLO_ATTN_BIN, "maps", f"source={src}", "model=yolov8n-ca.yaml", "imgsz=128"], cwd=cwd)
    out = cwd / "runs" / "maps" / "maps"
    assert proc.stdout.strip().endswith(f"saved to {Path('runs', 'maps', 'maps')}") and "at imgsz 128" in proc.stdout
    assert len(images) == 2 and sorted(p.stem for p in out.iterdir()) == [p.stem for p in images]
    # Numbered as Ultralytics numbers its runs (maps-2 in 8.4, maps2 before).
    monkeypatch.chdir(cwd)
    main(["maps", "--model", "yolov8n-ca.yaml", "--source", str(images[0]), "imgsz=64", "--shared-scale"])
    second = cwd / capsys.readouterr().out.strip().splitlines()[-1].rsplit(" saved to ", 1)[1]
    assert second.parent == out.parent and second != out
    assert (second / f"{images[0].stem}.png").stat().st_size > 1000
