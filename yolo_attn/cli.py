"""`yolo-attn`: the plugin's own command line. `yolo-attn expand MODEL` prints a model YAML as Ultralytics builds it.

A YAML written by reference (`base:`/`insert:`/`replace:`) comes out expanded into ordinary Ultralytics rows, with
its layer map; any other model YAML comes out as loaded. The output builds the same model when given back to
`yolo train model=...`, without the plugin's YAML lookup or the base file.
"""

import argparse
import sys
from pathlib import Path
from typing import Optional

import yaml

from yolo_attn.usererrors import FLAGS, HELP, run_command


def expanded_yaml(model: str) -> str:
    """Return the YAML text of `model` (a name Ultralytics or the plugin finds, or a path) as the parser receives it."""
    from ultralytics.nn.tasks import yaml_model_load

    from yolo_attn.registry import register
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
            note = "inserted by yolo_attn" if stock is None else f"stock layer {stock}"
            lines.append(f"  - {_flow(row)} # {i}{f' ({note})' if layer_map else ''}")
            i += 1
    if layer_map:
        lines.append(f"layer_map: {_flow(layer_map)} # stock index of each layer, null = inserted")
    return "\n".join(lines) + "\n"


def _flow(value: object) -> str:
    """Return `value` as one line of YAML flow style."""
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()


def main(argv: Optional[list] = None) -> int:
    """Run the `yolo-attn` command; return its exit status (2 for a mistake in the YAML, printed as one line)."""
    return run_command("yolo-attn", _main, argv)


def _main(argv: list) -> None:
    parser = argparse.ArgumentParser(prog="yolo-attn", description=__doc__.split("\n")[0])
    parser.add_argument(FLAGS[0], FLAGS[1], action="store_true", help=HELP)  # read by run_command
    commands = parser.add_subparsers(dest="command", required=True)
    expand = commands.add_parser("expand", help="print (or write) a model YAML expanded as Ultralytics builds it")
    expand.add_argument("model", help="model YAML name or path, e.g. yolo26n-cot.yaml")
    expand.add_argument("-o", "--out", help="write the YAML to this file instead of printing it")
    args = parser.parse_args(argv)
    text = expanded_yaml(args.model)
    if args.out:
        Path(args.out).write_text(text)
        print(f"{args.model} -> {args.out}")
    else:
        print(text, end="")


if __name__ == "__main__":
    sys.exit(main())
