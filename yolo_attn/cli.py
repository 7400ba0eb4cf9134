"""`yolo-attn`: the plugin's own command line. `yolo-attn expand MODEL` prints a model YAML as Ultralytics builds it;
`yolo-attn doctor` prints the versions, the registration state and the patch inventory with each check's result;
`yolo-attn modules` lists the operator table (built-in, registered and entry-point modules).

A YAML written by reference (`base:`/`insert:`/`replace:`) comes out expanded into ordinary Ultralytics rows, with
its layer map; any other model YAML comes out as loaded. The output builds the same model when given back to
`yolo train model=...`, without the plugin's YAML lookup or the base file.
"""

import argparse
import sys
from pathlib import Path

import yaml

from yolo_attn.usererrors import FLAGS, HELP, run_command


def expanded_yaml(model: str) -> str:
    """Return the YAML text of `model` (a name Ultralytics or the plugin finds, or a path) as the parser receives it."""
    from ultralytics.nn.tasks import yaml_model_load

    from yolo_attn.patches import register
    from yolo_attn.validate import build_as_ultralytics

    register()
    d = yaml_model_load(model)
    build_as_ultralytics(model)  # the same named errors as training would give, before anything is printed
    scale = d.pop("scale", "")
    d.pop("yaml_file", None)
    lines = [f"# {Path(model).name} as Ultralytics builds it (yolo-attn expand{f'; scale {scale}' if scale else ''})"]
    layer_map = d.get("layer_map") or []
    top = {k: v for k, v in d.items() if k not in ("backbone", "head", "layer_map")}
    lines.append(yaml.safe_dump(top, sort_keys=False, default_flow_style=None, width=120).rstrip())
    i = 0
    for part in ("backbone", "head"):
        lines.append(f"{part}:")
        for row in d[part]:
            stock = layer_map[i] if i < len(layer_map) else i
            keeps = isinstance(row, list) and len(row) > 3 and row[3][:1] == [None]
            note = f"stock layer {stock}" if stock is not None else "new, inserted by yolo_attn"
            note += "; c2 null: keeps its input's channels at every scale" if keeps else ""
            lines.append(f"  - {_flow(row)} # {i}{f' ({note})' if layer_map else ''}")
            i += 1
    if layer_map:
        lines.append(f"layer_map: {_flow(layer_map)} # stock index of each layer; null: a new layer, inserted")
    return "\n".join(lines) + "\n"


def _flow(value: object) -> str:
    """Return `value` as one line of YAML flow style."""
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()


# The 5 % is yolo_attn.maps.FLAT_CONTRAST, written out: importing maps (and torch) would slow every `yolo-attn --help`
# by seconds; tests/test_maps.py checks that the two agree.
MAPS_HELP = (
    "each panel has a colour bar in the map's raw units; a map whose relative contrast (max-min)/max(|min|,|max|) is "
    "below 5% is titled FLAT and drawn on a scale widened to that contrast; shared_scale=true (--shared-scale) "
    "puts all panels of an image on one absolute scale; imgsz defaults to the checkpoint's training imgsz (640 for a "
    "model YAML)"
)


def maps(args: list) -> list:
    """`yolo-attn maps source=IMG_OR_DIR model=CKPT_OR_YAML [imgsz= project= name= exist_ok= include= shared_scale=]`.

    Writes one PNG per image (the image and a heatmap panel with a colour bar per attention layer) into an
    Ultralytics-style run folder (`runs/maps/maps`, then `maps-2`, ... as Ultralytics numbers runs, under the current
    directory) and returns the written paths. `imgsz` defaults to the checkpoint's training size (640 for a model
    YAML); `include=C2PSA,9` also draws those layers (by class name or index) with the generic map;
    `shared_scale=true` draws all panels of an image on one absolute colour scale.
    """
    from ultralytics.data.utils import IMG_FORMATS
    from ultralytics.utils.files import increment_path
    from ultralytics.utils.patches import imread

    from yolo_attn.maps import attention_maps, default_imgsz, load_model, save_figure

    allowed = dict(
        source="", model="", imgsz="", project="runs/maps", name="maps", exist_ok="", include="", shared_scale=""
    )
    opts = dict(allowed)
    for token in args:
        key, sep, value = token.lstrip("-").partition("=")
        if not sep or key not in allowed:
            raise SystemExit(f"yolo-attn maps: expected key=value with key in {sorted(allowed)}, got {token!r}")
        opts[key] = value
    if not opts["source"] or not opts["model"]:
        raise SystemExit("yolo-attn maps: give source=IMAGE_OR_FOLDER and model=CHECKPOINT_OR_YAML")
    source = Path(opts["source"])
    images = sorted(p for p in source.iterdir() if p.suffix[1:].lower() in IMG_FORMATS) if source.is_dir() else [source]
    if not images or not images[0].exists():
        raise SystemExit(f"yolo-attn maps: no image found at {source}")
    exist_ok, shared = (opts[k].lower() in ("1", "true", "yes") for k in ("exist_ok", "shared_scale"))
    out = increment_path(Path(opts["project"]) / opts["name"], exist_ok=exist_ok)
    include = [int(v) if v.isdigit() else v for v in opts["include"].split(",") if v]
    model = load_model(opts["model"])
    imgsz = int(opts["imgsz"]) if opts["imgsz"] else default_imgsz(model)
    written = []
    for image in images:
        found = attention_maps(model, image, imgsz=imgsz, include=include)
        if not found:
            raise SystemExit(f"yolo-attn maps: {opts['model']} has no attention layer to draw")
        out.mkdir(parents=True, exist_ok=True)
        title = f"{image.name}, imgsz {imgsz}"
        written.append(save_figure(found, imread(str(image)), out / f"{image.stem}.png", title, shared_scale=shared))
    n = len(written)
    flat = [f"{m.index} {m.name}" for m in found if m.flat]  # of the last image, in model order: a hint for the PNGs
    print(
        f"{len(found)} attention layers drawn on {n} image{'s' * (n != 1)} at imgsz {imgsz}"
        + (f" ({len(flat)} flat on {image.name}: {', '.join(flat)})" if flat else "")
        + f", {n} PNG{'s' * (n != 1)} saved to {out}"
    )
    return written


def doctor() -> str:
    """Return the `yolo-attn doctor` report (registration is attempted first, as `import ultralytics` would)."""
    import ultralytics.nn.tasks  # noqa: F401  (the start-up hook registers on this import)

    from yolo_attn import patches
    from yolo_attn.doctor import report

    patches.register_safely()
    return report() + "\n\n" + modules_table() + "\n"


def modules_table() -> str:
    """Return the operator table: YAML name, insertable by reference, twin, class and origin (entry points read)."""
    from yolo_attn import operators

    operators.scan_entry_points()
    lines = ["modules (YAML name, insertable by reference, CSP twin of, class, origin):"]
    for op in operators.rows():
        if op.cls is None and op.error is None:
            try:
                operators.load(op.name)
            except operators.RegistrationError:
                pass
        insertable = "error" if op.error else "yes" if op.keeps_channels else "no"
        line = f"  {op.name:<16} {insertable:<6} {op.twin_of or '-':<8} {op.target:<36} {op.origin}"
        lines.append(line + (f"\n      error: {op.error}" if op.error else ""))
    return "\n".join(lines)


def main(argv: list | None = None) -> int:
    """Run the `yolo-attn` command; return its exit status (2 for a mistake in the YAML, printed as one line)."""
    return run_command("yolo-attn", _main, argv)


def _main(argv: list) -> None:
    parser = argparse.ArgumentParser(
        prog="yolo-attn",
        description="The yolo_attn plugin's own commands: expand a model YAML as Ultralytics builds it, draw attention "
        "maps, check the installation (doctor) and list the modules a model YAML may name. Training, validation, "
        "prediction and export stay Ultralytics' `yolo` command, with the plugin active.",
    )
    parser.add_argument(FLAGS[0], FLAGS[1], action="store_true", help=HELP)  # read by run_command
    commands = parser.add_subparsers(dest="command", required=True)
    expand = commands.add_parser("expand", help="print (or write) a model YAML expanded as Ultralytics builds it")
    expand.add_argument("model", help="model YAML name or path, e.g. yolo26n-cot.yaml")
    expand.add_argument("-o", "--out", help="write the YAML to this file instead of printing it")
    draw = commands.add_parser(
        "maps",
        help="draw each attention layer's map over images: source=IMG_OR_DIR model=CKPT_OR_YAML [imgsz= ...]",
        description="Draw each attention layer's map over images (docs/maps.md): " + MAPS_HELP,
    )
    draw.add_argument(
        "args",
        nargs="*",
        help="source=, model=, imgsz= (default: the checkpoint's training imgsz, 640 for a YAML), project=runs/maps, "
        "name=maps, exist_ok=, include=C2PSA,9, shared_scale=",
    )
    draw.add_argument("--source", help="image or folder (same as source=)")
    draw.add_argument("--model", help="checkpoint or model YAML (same as model=)")
    draw.add_argument(
        "--shared-scale", action="store_true", help="one absolute colour scale for all panels (as shared_scale=true)"
    )
    commands.add_parser("doctor", help="print versions, registration state, the patch inventory and its checks")
    commands.add_parser("modules", help="list the modules model YAMLs may name (built-in, registered, entry points)")
    args = parser.parse_args(argv)
    if args.command in ("doctor", "modules"):
        print(doctor() if args.command == "doctor" else modules_table())
        return
    if args.command == "maps":
        extra = [f"{k}={v}" for k in ("source", "model") if (v := getattr(args, k))]
        maps([*args.args, *extra, *(["shared_scale=true"] if args.shared_scale else [])])
        return
    text = expanded_yaml(args.model)
    if args.out:
        Path(args.out).write_text(text)
        print(f"{args.model} -> {args.out}")
    else:
        print(text, end="")


if __name__ == "__main__":
    sys.exit(main())
