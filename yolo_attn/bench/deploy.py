"""Deploy mode: the plugin's operators through every export format of `yolo export`, against the stock model.

Usage::

    yolo-attn-bench deploy [--models yolov8n yolov8n-cot ...] [--formats onnx ncnn ...] [--imgsz 160]
                           [--weights stock.pt cot.pt ... --data synth-shapes.yaml] [--out docs]

For each format and model, in a fresh interpreter per format (exporters import large frameworks that do not always
live well together), it does what a user does: `YOLO(checkpoint).export(format=F)`, then loads the file with
Ultralytics' `AutoBackend`, which is what `yolo predict model=<exported>` and `yolo val` run. It records

- whether the export succeeded (else the exporter's last error line) and whether the file runs here;
- the error against PyTorch float32 on two real photos (bus.jpg, zidane.jpg): max |Δ| over the box rows (pixels)
  and over the class-score rows of the raw head output. Models given by YAML are built untrained and calibrated
  (`yolo_attn.bench.calibrate`) so their outputs depend on the image;
- the size on disk;
- the latency of one inference through `AutoBackend`, as a ratio to the stock model of the same family (the model
  named by the part before the first '-': yolov8n for yolov8n-cot) in the same runtime, interleaved rounds, the
  process pinned to one core (so every runtime runs on one thread's worth of CPU, whatever its own thread pool).

With `--weights` (trained checkpoints, stock first) and `--data`, the INT8 part: mAP50-95 from `YOLO(file).val()` on
the PyTorch checkpoint, its OpenVINO float32 export and its OpenVINO INT8 export (`int8=True`, NNCF calibrated on
`--data` as `yolo export ... int8=True data=...` does), and the drop to INT8 beside the stock model's.

Writes `deploy.md` (tables, machine, load, settings) and `deploy.json` (every figure) into `--out`. CoreML has no
runtime on Linux: its cell says whether the conversion succeeded, which is all a Linux machine can check. A format
whose exporter is not installed is reported as such, with what to install (`pip install "yolo-attn[deploy]"`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from yolo_attn.bench.stats import median_of_all, round_ratios
from yolo_attn.bench.text import machine_line
from yolo_attn.usererrors import one_line

DESCRIPTION = (
    "Export stock and plugin models to every format of `yolo export` that runs on this machine, run each file "
    "through Ultralytics' AutoBackend, and report per format: exported, runs, error vs PyTorch, size, latency ratio to "
    "the stock model; with --weights, mAP50-95 of float32 and OpenVINO INT8 exports."
)

# Every format of `yolo export` that exports on a Linux CPU without a vendor SDK, in `export_formats()` order.
FORMATS = (
    "torchscript",
    "onnx",
    "openvino",
    "coreml",
    "coreai",
    "saved_model",
    "pb",
    "litert",
    "paddle",
    "mnn",
    "ncnn",
    "executorch",
)
NO_RUNTIME_HERE = {
    "coreml": "no CoreML runtime on Linux: conversion checked only",
    "coreai": "Core AI runs on macOS 26 only: conversion checked only",
}
MODELS = ("yolov8n", "yolov8n-cot", "yolov8n-c2f-cot", "yolov8n-attnconv", "yolov8n-ca", "yolo11n", "yolo11n-c3k2-cot")


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """Add the deploy mode's options to `ap`."""
    ap.add_argument("--models", nargs="*", default=list(MODELS), help="model YAMLs (bare names) or checkpoints")
    ap.add_argument(
        "--formats", nargs="*", default=list(FORMATS), help="export formats (`yolo export format=`); none: INT8 only"
    )
    ap.add_argument("--imgsz", type=int, default=160, help="export and inference size")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds per format")
    ap.add_argument("--runs", type=int, default=5, help="timed inferences per model and round")
    ap.add_argument("--weights", nargs="*", default=[], help="trained checkpoints for the INT8 part, stock first")
    ap.add_argument("--data", default="synth-shapes.yaml", help="data set of the INT8 calibration and validation")
    ap.add_argument(
        "--int8-formats", nargs="+", default=["openvino", "litert"], help="formats of the INT8 part (`int8=True`)"
    )
    ap.add_argument("--out", type=Path, default=Path("runs/deploy"), help="folder for deploy.md and deploy.json")
    ap.add_argument("--report", type=Path, help="only write deploy.md from this deploy.json of an earlier run")
    ap.add_argument(
        "--python",
        action="append",
        default=[],
        type=_format_python,
        metavar="FORMAT=INTERPRETER",
        help="run FORMAT's export in another environment's interpreter (e.g. coreml=~/.venvs/apple/bin/python)",
    )


def _format_python(value: str) -> tuple[str, str]:
    """Parse `--python FORMAT=INTERPRETER`."""
    fmt, sep, python = value.partition("=")
    if not sep or fmt not in FORMATS or not python:
        raise argparse.ArgumentTypeError(f"expected FORMAT=INTERPRETER with FORMAT one of {', '.join(FORMATS)}")
    return fmt, python


def family(name: str) -> str:
    """The stock model a variant is measured against: the part of its name before the first '-'."""
    return Path(name).stem.split("-")[0]


def main(args: argparse.Namespace) -> int:
    """Run the deploy matrix and the INT8 part; write the report."""
    from yolo_attn.bench.calibrate import calibrated_checkpoint
    from yolo_attn.bench.timing import load_average, machine_info

    if args.report:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "deploy.md").write_text(markdown(json.loads(args.report.read_text())))
        return 0
    pythons = dict(args.python)
    info = machine_info()
    started = time.time()
    work = Path(tempfile.mkdtemp(prefix="yolo-attn-deploy-"))
    models = {}
    for m in args.models if args.formats else []:
        name = Path(m).stem
        models[name] = str(m) if m.endswith(".pt") else str(calibrated_checkpoint(f"{name}.yaml", work / f"{name}.pt"))
        print(f"deploy: {name} ready", flush=True)
    cells: dict[str, dict[str, Any]] = {}
    for fmt in args.formats:
        t = time.time()
        job = {"format": fmt, "imgsz": args.imgsz, "models": models, "rounds": args.rounds, "runs": args.runs}
        cells[fmt] = _in_subprocess(job, work / fmt, pythons.get(fmt, sys.executable))
        ok = sum(
            c.get("runs", False) or (c.get("exported", False) and fmt in NO_RUNTIME_HERE) for c in cells[fmt].values()
        )
        print(f"deploy: {fmt}: {ok}/{len(models)} models pass ({time.time() - t:.0f}s)", flush=True)
    int8 = _int8_table(args.weights, args.data, args.imgsz, args.int8_formats, work) if args.weights else []
    report = {
        "machine": info,
        "loadavg_end": load_average(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "minutes": round((time.time() - started) / 60, 1),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "cells": cells,
        "int8": int8,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "deploy.json").write_text(json.dumps(report, indent=1))
    (args.out / "deploy.md").write_text(markdown(report))
    print(f"deploy: wrote {args.out / 'deploy.md'} ({report['minutes']} min)", flush=True)
    return 0


def _in_subprocess(job: dict, folder: Path, python: str) -> dict:
    """Run one format's job in a fresh interpreter; return model name -> cell."""
    out = _run_worker(job, folder, python, capture=True)
    result = folder / "cells.json"
    if result.exists():
        return json.loads(result.read_text())
    tail = (out.stderr or out.stdout).decode(errors="replace").strip().splitlines()
    why = tail[-1] if tail else f"exit code {out.returncode}"
    return {name: {"exported": False, "error": f"worker failed: {why}"} for name in job["models"]}


def _run_worker(job: dict, folder: Path, python: str, capture: bool) -> subprocess.CompletedProcess:
    """`python -m yolo_attn.bench.deploy job.json` in `folder`, offline and with Ultralytics' auto-install off."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "job.json").write_text(json.dumps(job))
    env = {**os.environ, "YOLO_OFFLINE": os.environ.get("YOLO_OFFLINE", "1")}
    env.setdefault("YOLO_AUTOINSTALL", "0")  # never pip-install an exporter behind the user's back
    command = [python, "-m", "yolo_attn.bench.deploy", str(folder / "job.json")]
    return subprocess.run(command, cwd=folder, env=env, capture_output=capture)


def measure_format(job: dict) -> dict:
    """Export every model of `job` to its format, run the files through AutoBackend, time them; model -> cell."""
    import numpy as np
    import torch
    from ultralytics import YOLO
    from ultralytics.nn.autobackend import AutoBackend

    from yolo_attn.bench.calibrate import photos
    from yolo_attn.bench.timing import interleaved, quiet

    fmt, imgsz = job["format"], job["imgsz"]
    xs = [photos(imgsz, imgsz)] + [photos(imgsz, imgsz, batch=2)[1:]]  # bus.jpg, zidane.jpg; batch 1 each
    cells, backends = {}, {}
    for name, ckpt in job["models"].items():
        local = Path(f"{name}.pt")
        local.write_bytes(Path(ckpt).read_bytes())  # exports land beside the checkpoint
        cell: dict[str, Any] = {"exported": False}
        cells[name] = cell
        t = time.time()
        try:
            with quiet():
                f = YOLO(str(local)).export(format=fmt, imgsz=imgsz, half=False, device="cpu", verbose=False)
        except Exception as e:  # the exporter's own failure, reported per cell
            cell["error"] = _one_line(e)
            continue
        if not f or not Path(f).exists():
            cell["error"] = "the exporter returned no file"
            continue
        cell.update(exported=True, export_s=round(time.time() - t, 1), size_mb=round(_size(Path(f)) / 2**20, 2))
        if fmt in NO_RUNTIME_HERE:
            cell["note"] = NO_RUNTIME_HERE[fmt]
            cell["ops"] = _coreml_ops(Path(f)) if fmt == "coreml" else []
            continue
        try:
            with quiet():
                backend = AutoBackend(f, device=torch.device("cpu"), fp16=False, verbose=False)
                net = YOLO(str(local)).model.float().eval()
                errors = []
                for x in xs:
                    y = _first(backend(torch.from_numpy(x)))
                    with torch.no_grad():
                        ref = _first(net(torch.from_numpy(x))).numpy()
                    errors.append(block_errors(np.asarray(y, dtype=np.float32), ref))
        except Exception as e:
            cell["error"] = f"runs: {_one_line(e)}"
            continue
        cell["runs"] = True
        for i, key in enumerate(("box_err", "cls_err", "box_scale", "cls_scale")):
            cell[key] = max(e[i] for e in errors)
        backends[name] = backend
    if backends and job.get("rounds", 0) > 0:
        x = torch.from_numpy(xs[0])
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core for every runtime's thread pool
        torch.set_num_threads(1)
        fns = {name: (lambda b=b: b(x)) for name, b in backends.items()}
        samples = interleaved(fns, job["rounds"], job["runs"], warmup=2, label=fmt)
        for name, rounds in samples.items():
            cells[name]["ms"] = median_of_all(rounds)
            stock = samples.get(family(name))
            if stock is not None:
                ratios = round_ratios(rounds, stock)
                cells[name].update(ratio=statistics.median(ratios), ratio_range=[min(ratios), max(ratios)])
    return cells


def _coreml_ops(path: Path) -> list[str]:
    """Op types of a converted CoreML program, read from its spec (no CoreML runtime on Linux to load it)."""
    import coremltools as ct

    spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    blocks = [b for fn in spec.mlProgram.functions.values() for b in fn.block_specializations.values()]
    return sorted({op.type for b in blocks for op in b.operations})


def _first(y: Any) -> Any:
    """The first tensor of a model output (the decoded boxes and scores of a detector)."""
    while isinstance(y, (list, tuple)):
        y = y[0]
    return y


def block_errors(y, ref) -> tuple[float, float, float, float]:
    """Max |Δ| over the box rows and the class-score rows of a (B, 4 + nc, anchors) or end-to-end (B, n, 6) output,
    then max |ref| over each (the scale of the float32 parity bound)."""
    import numpy as np

    if y.shape != ref.shape:
        raise ValueError(f"output shape {y.shape} differs from PyTorch's {ref.shape}")
    if y.shape[-1] == 6:  # end-to-end: x1, y1, x2, y2, score, class
        box, cls = (..., slice(0, 4)), (..., slice(4, 5))
    else:
        box, cls = (slice(None), slice(0, 4)), (slice(None), slice(4, None))
    d = np.abs(y - ref)
    return float(d[box].max()), float(d[cls].max()), float(np.abs(ref[box]).max()), float(np.abs(ref[cls]).max())


def _size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _one_line(e: BaseException) -> str:
    """`TypeName: last line of the message`: exporters raise long multi-line errors whose last line says what failed."""
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {one_line(lines[-1]) if lines else ''}"[:300]


def _int8_table(weights: list[str], data: str, imgsz: int, formats: list[str], work: Path) -> list[dict]:
    """mAP50-95 of each trained checkpoint in PyTorch and, per format, its float32 and INT8 exports (a row each)."""
    job = {"weights": weights, "data": data, "imgsz": imgsz, "formats": formats}
    _run_worker(job, work / "int8", sys.executable, capture=False)  # its progress lines go to the console
    result = work / "int8" / "int8.json"
    return json.loads(result.read_text()) if result.exists() else []


def measure_int8(job: dict) -> list[dict]:
    """Validate each checkpoint in PyTorch and as float32 and INT8 export in each format; return one row each."""
    from ultralytics import YOLO

    from yolo_attn.bench.timing import quiet

    rows = []
    for w in job["weights"]:
        name = Path(w).parent.parent.name if Path(w).parent.name == "weights" else Path(w).stem
        local = Path(f"{name}.pt")
        local.write_bytes(Path(w).read_bytes())
        row: dict[str, Any] = {"model": name}
        val = {"data": job["data"], "imgsz": job["imgsz"], "batch": 16, "plots": False, "verbose": False}
        with quiet():
            row["pytorch"] = float(YOLO(str(local)).val(**val, project=str(Path.cwd()), name=f"{name}-pt").box.map)
            for fmt in job["formats"]:
                for key, opts in ((f"{fmt}_f32", {}), (f"{fmt}_int8", {"int8": True, "data": job["data"]})):
                    try:
                        f = YOLO(str(local)).export(format=fmt, imgsz=job["imgsz"], verbose=False, **opts)
                        metrics = YOLO(f, task="detect").val(**val, project=str(Path.cwd()), name=f"{name}-{key}")
                        row[key] = float(metrics.box.map)
                    except Exception as e:
                        row[f"{key}_error"] = _one_line(e)
        print(f"deploy: int8 {row}", flush=True)
        rows.append(row)
    return rows


def markdown(report: dict) -> str:
    """The report as Markdown: the matrix per format and model, then the INT8 table."""
    cells, s = report["cells"], report["settings"]
    machine = {**report["machine"], "loadavg_end": report["loadavg_end"]}
    lines = [
        "# Deployment matrix",
        "",
        f"Generated by `yolo-attn-bench deploy` on {report['date']} ({report['minutes']} min). {machine_line(machine)}",
    ]
    if cells:
        lines += _matrix(cells, s)
    if report["int8"]:
        lines += _int8_lines(report["int8"], s)
    return "\n".join(lines) + "\n"


def _matrix(cells: dict, s: dict) -> list[str]:
    """The matrix: a row per format, a column per model, and the failures below it."""
    models = list(next(iter(cells.values())))
    lines = [
        "",
        f"Models exported at {s['imgsz']} px by Ultralytics' own exporter (`YOLO(ckpt).export(format=F)`), each file "
        "run through Ultralytics' `AutoBackend` (what `yolo predict`/`yolo val` run). Error: max |Δ| against PyTorch "
        "float32 on bus.jpg and zidane.jpg, box rows in pixels / class scores, untrained models with calibrated "
        "statistics (their outputs depend on the image). Latency: one inference through AutoBackend, ratio to the "
        f"stock model of the family in the same runtime, median of {s['rounds']} interleaved rounds of {s['runs']}, "
        "the process pinned to one core. OpenVINO runs at its default precision, as `yolo predict` does: bf16 on CPUs "
        "with AMX or AVX512_BF16, where untrained models' boxes move by tens of pixels, stock and plugin alike "
        "(float32 parity of every shipped YAML: tests/test_openvino.py; what precision costs a trained model: the "
        "INT8 table).",
        "",
        "| format | " + " | ".join(models) + " |",
        "|---|" + "---|" * len(models),
    ]
    for fmt, row in cells.items():
        lines.append(f"| {fmt} | " + " | ".join(_cell_text(row.get(name, {})) for name in models) + " |")
    lines += ["", "Cells: error box px / class score · size · latency ratio to stock (range over rounds)."]
    failures = [(fmt, n, c["error"]) for fmt, row in cells.items() for n, c in row.items() if c.get("error")]
    if failures:
        lines += ["", "Failures, as the exporter or runtime reported them:", ""]
        lines += [f"- {fmt}, {n}: `{e}`" for fmt, n, e in failures]
    return lines


def _int8_lines(rows: list[dict], s: dict) -> list[str]:
    """The INT8 table: mAP50-95 per checkpoint in PyTorch, float32 and INT8 per format, the drop beside stock's."""
    fmts = s["int8_formats"]
    lines = [
        "",
        "## INT8",
        "",
        f"mAP50-95 on `{s['data']}` (val split) from `YOLO(file).val()` at {s['imgsz']} px: each trained "
        "checkpoint in PyTorch, then per format its float32 export and its INT8 export (`int8=True data=...`: "
        "calibrated on that data set by the format's own quantiser, NNCF for OpenVINO). Drop: float32 export "
        "minus INT8 export; excess: drop minus the stock model's drop in the same format (target: at most +0.01).",
        "",
        "| model | PyTorch | " + " | ".join(f"{f} f32 | {f} INT8 | drop | excess" for f in fmts) + " |",
        "|---|---:|" + "---:|---:|---:|---:|" * len(fmts),
    ]
    for r in rows:
        cols = [r["model"], _f(r.get("pytorch"))]
        for f in fmts:
            d, d0 = _drop(r, f), _drop(rows[0], f)
            excess = f"{d - d0:+.4f}" if d is not None and d0 is not None else "-"
            cols += [_f(r.get(f"{f}_f32")), _f(r.get(f"{f}_int8")), _f(d), excess]
        lines.append("| " + " | ".join(cols) + " |")
    errors = [(r["model"], k, v) for r in rows for k, v in r.items() if k.endswith("_error")]
    lines += [f"- {m}, {k[: -len('_error')]}: `{e}`" for m, k, e in errors]
    return lines


def _drop(row: dict, fmt: str) -> float | None:
    a, b = row.get(f"{fmt}_f32"), row.get(f"{fmt}_int8")
    return a - b if a is not None and b is not None else None


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"


def _cell_text(c: dict) -> str:
    if not c.get("exported"):
        return "✗ export"
    if c.get("note"):
        return f"converts · {c['size_mb']:.1f} MB"
    if not c.get("runs"):
        return "✗ runs"
    text = f"{c['box_err']:.3g} / {c['cls_err']:.2g} · {c['size_mb']:.1f} MB"
    if "ratio" in c:
        lo, hi = c["ratio_range"]
        text += f" · {c['ratio']:.2f}× ({lo:.2f}–{hi:.2f})"
    return text


def _worker_setup(fmt: str) -> None:
    """What the worker arranges before exporting, so that nothing is installed or downloaded behind the user's back.

    - MNN's converter imports `MNN.tools.utils.log`, which runs `pip install -U aliyun-log-python-sdk` (with whatever
      `pip` is first on PATH) when that package is missing, then sends usage data; marked absent here, the converter
      runs without its logger (it catches the ImportError itself).
    - Ultralytics' SavedModel export fetches onnx2tf's sample-input file even for float32 (no option skips it) unless
      `calibration_image_sample_data_20x128x128x3_float32.npy` lies in the working directory; for a float32 export
      onnx2tf only feeds it through both graphs as a check, so a fixed random array of that shape serves.
    """
    sys.modules.setdefault("MNN.tools.utils.log", None)  # a None entry makes the import raise ImportError
    sample = Path("calibration_image_sample_data_20x128x128x3_float32.npy")
    if fmt in {"saved_model", "pb"} and not sample.exists():
        import numpy as np

        np.save(sample, np.random.default_rng(0).random((20, 128, 128, 3), dtype=np.float32))


if __name__ == "__main__":  # a worker: `python -m yolo_attn.bench.deploy job.json` (see `_in_subprocess`)
    _job = json.loads(Path(sys.argv[1]).read_text())
    _worker_setup(_job.get("format", ""))
    if "weights" in _job:
        Path("int8.json").write_text(json.dumps(measure_int8(_job)))
    else:
        Path("cells.json").write_text(json.dumps(measure_format(_job)))
