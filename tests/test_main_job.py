"""The README's main job, `yolo train model=yolov8n-cot.yaml data=synth-shapes.yaml ...`, on the tiny data set.

It runs through the real `yolo` command in a fresh interpreter from an empty working directory, offline, with plots on
(Ultralytics' default): plotting looks for Arial.ttf and, offline, fails to download it and falls back to PIL's
default font, so training must still finish and write its plots. The run is conftest's `main_job` fixture, which
tests/test_cli.py also validates, predicts with and reloads.
"""

import csv


def test_main_job_trains_offline_with_progress_metrics_plots_and_weights(main_job):
    work, run_dir, log = main_job
    assert "mAP50-95" in log and "all" in log  # the usual metrics table
    assert "1/1" in log  # the epoch progress bar

    with open(run_dir / "results.csv", newline="") as f:
        rows = [{k.strip(): v.strip() for k, v in row.items()} for row in csv.DictReader(f)]
    assert len(rows) == 1 and rows[0]["epoch"] == "1"
    assert 0 <= float(rows[0]["metrics/mAP50-95(B)"]) <= 1 and 0 <= float(rows[0]["metrics/mAP50(B)"]) <= 1
    for weights in ("best.pt", "last.pt"):
        assert (run_dir / "weights" / weights).stat().st_size > 1e6
    # Plots: matplotlib charts and the PIL-drawn image mosaics (the ones that look up a font).
    for plot in ("results.png", "confusion_matrix.png", "labels.jpg", "train_batch0.jpg", "val_batch0_pred.jpg"):
        assert (run_dir / plot).stat().st_size > 0, plot
    assert not any(work.iterdir())  # nothing written into the working directory
