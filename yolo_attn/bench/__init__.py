"""The `yolo-attn-bench` command: one module per benchmark mode, plus the measuring pieces they share.

Imports run downwards in this list; no module imports one above it.

- modes, each a module with `DESCRIPTION`, `add_arguments(parser)` and `main(args) -> int`, listed in `cli.MODES`:
  `models` (the default: whole models against the stock ones), `ops` (single operators against a 3x3 conv),
  `finetune` (variants fine-tuned from the same stock weights), `deploy` (every export format);
- `report` (the models mode's files), `finetune_report` (the finetune mode's files), `memory` (peak memory of one
  call in a fresh process), `progress` (progress lines with the time left of a long job);
- `train`: the typed training budget (`TrainBudget`) and fixed-budget runs over seeds in worker processes;
- `zoo`: the benchmarked models (stock and shipped YAMLs at scale n); `runners`: one call of a model per runtime
  (PyTorch, compiled, ONNX Runtime, OpenVINO) and one training step;
- `stats`: ratios over interleaved rounds, mean and spread over seeds, Welch and paired tests; `text`: counts,
  durations and the "Machine: ..." header; `timing`: interleaved timing rounds, quiet Ultralytics, the machine;
- `flops`: the full FLOP count (`count_flops`, a library feature) and Ultralytics' own count beside it;
  `calibrate`: untrained models whose outputs depend on the image (real photos, calibrated statistics).
"""

from yolo_attn.bench.flops import count_flops

__all__ = ("count_flops",)
