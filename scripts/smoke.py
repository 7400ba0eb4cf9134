"""Smoke test of the installed plugin against the installed Ultralytics, through the `yolo` command.

Run in an environment holding Ultralytics and the plugin (`scripts/version_matrix.sh` builds one per release):
stock `yolo train`, a by-reference YOLO11 plugin YAML trained from an empty directory, its checkpoint reloaded under
`ULTRALYTICS_SAFE_LOAD=1`, ONNX export, a generated classification set built offline and rebuilt when damaged; on
Ultralytics 8.3 a YOLO26 plugin YAML must fail naming the release it needs. Offline throughout. Exit status 0 when
every step passed; one line per step.
"""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

YOLO = str(Path(sys.executable).with_name("yolo"))
TRAIN = ["data=synth-shapes-tiny.yaml", "imgsz=64", "epochs=1", "batch=8", "workers=0", "plots=False", "device=cpu"]
PLUGIN_YAML = "base: yolo11n.yaml\ninsert:\n  - [4, CoordAtt, []]\n  - [6, CoTAttention, []]\n"


def step(name: str, args: list, cwd: Path, env: dict, expect_fail: str = "", expect: str = "") -> bool:
    """Run one command; passed = exit 0 with `expect` in the output (or, with `expect_fail`, non-zero with that)."""
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    ok = (proc.returncode != 0 and expect_fail in out) if expect_fail else proc.returncode == 0 and expect in out
    print(f"{'PASS' if ok else 'FAIL'} {name}", flush=True)
    if not ok:
        print("\n".join("    " + line for line in out.strip().splitlines()[-25:]), flush=True)
    return ok


def main() -> int:
    """Run the smoke steps in a fresh temporary directory and return the exit status."""
    from importlib.metadata import version as installed

    version = installed("ultralytics")  # not `import ultralytics`: it would read (and may reset) the user's settings
    root = Path(tempfile.mkdtemp(prefix="yolo_attn_smoke_"))
    (root / "config" / "Ultralytics").mkdir(parents=True)
    env = {
        **os.environ,
        "YOLO_OFFLINE": "1",
        "YOLO_AUTOINSTALL": "0",
        "YOLO_CONFIG_DIR": str(root / "config"),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
    }
    work = root / "work"
    work.mkdir()
    subprocess.run(
        [YOLO, "settings", f"datasets_dir={root / 'datasets'}", f"runs_dir={root / 'runs'}", "sync=False"],
        env=env,
        capture_output=True,
    )
    (work / "my-yolo11-attn.yaml").write_text(PLUGIN_YAML)
    print(f"ultralytics {version}, python {sys.version.split()[0]}", flush=True)
    results = [
        step(
            "stock yolo train model=yolov8n.yaml",
            [YOLO, "train", "model=yolov8n.yaml", *TRAIN, f"project={root / 'runs'}", "name=stock"],
            work,
            env,
        ),
        step(
            "plugin by-reference YOLO11 YAML trains",
            [YOLO, "train", "model=my-yolo11-attn.yaml", *TRAIN, f"project={root / 'runs'}", "name=plugin"],
            work,
            env,
        ),
    ]
    best = root / "runs" / "plugin" / "weights" / "best.pt"
    results.append(
        step(
            "reload under ULTRALYTICS_SAFE_LOAD=1 and predict",
            [
                sys.executable,
                "-c",
                f"from ultralytics import YOLO; m = YOLO({str(best)!r}); "
                "import numpy as np; r = m.predict(np.zeros((64, 64, 3), 'uint8'), imgsz=64, verbose=False); "
                "assert any(t.__module__.startswith('yolo_attn') for t in map(type, m.model.modules()))",
            ],
            work,
            {**env, "ULTRALYTICS_SAFE_LOAD": "1"},
        )
    )
    results.append(
        step("yolo export format=onnx", [YOLO, "export", f"model={best}", "format=onnx", "imgsz=64"], work, env)
    )
    classify = [YOLO, "train", "model=yolov8n-cls.yaml", "data=synth-shapes-cls-tiny", *TRAIN[1:]]
    results.append(step("classification set built offline", [*classify, f"project={root / 'runs'}"], work, env))
    for crop in sorted((root / "datasets" / "synth-shapes-cls-tiny" / "val").rglob("*.jpg"))[:2]:
        crop.unlink()
    results.append(
        step(
            "damaged classification set rebuilt on use",
            [*classify, f"project={root / 'runs'}"],
            work,
            env,
            expect="the build wrote",
        )
    )
    if not version.startswith("8.3."):  # MuSGD (8.4+): before 8.4.108 it asserted 2-D on every ndim >= 2 parameter
        (work / "my-layer-scale.yaml").write_text(PLUGIN_YAML + "layer_scale: 0.0\n")
        results.append(
            step(
                "plugin YAML with layer_scale trains with optimizer=MuSGD",
                [YOLO, "train", "model=my-layer-scale.yaml", *TRAIN, "optimizer=MuSGD", f"project={root / 'runs'}"],
                work,
                env,
            )
        )
    if version.startswith("8.3."):
        (work / "my-yolo26.yaml").write_text("base: yolo26n.yaml\ninsert:\n  - [4, CoordAtt, []]\n")
        results.append(
            step(
                "YOLO26 plugin YAML fails naming the release",
                [YOLO, "train", "model=my-yolo26.yaml", *TRAIN],
                work,
                env,
                expect_fail="8.4.0",
            )
        )
        results.append(
            step(
                "shipped YOLO26 plugin YAML fails naming the release",
                [YOLO, "train", "model=yolo26n-ca.yaml", *TRAIN],
                work,
                env,
                expect_fail="8.4.0",
            )
        )
    print(f"smoke {'passed' if all(results) else 'FAILED'}: {sum(results)}/{len(results)} steps", flush=True)
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
