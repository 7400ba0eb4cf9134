"""The `yolo-attn-bench` command: one module per benchmark mode, plus the measuring pieces they share.

- `flops`: the full FLOP count (`count_flops`, a library feature) and Ultralytics' own count beside it;
- `timing`: interleaved single-thread timing rounds, quiet Ultralytics, machine description;
- `zoo`: the benchmarked models (stock and shipped YAMLs at scale n);
- `train`: fixed-budget training runs over seeds in worker processes; `report`: the models mode's output files;
- modes, each a module with `DESCRIPTION`, `add_arguments(parser)` and `main(args) -> int`, listed in `cli.MODES`:
  `models` (the default: whole models against the stock ones), `ops` (single operators against a 3x3 conv).
"""

from yolo_attn.bench.flops import count_flops

__all__ = ("count_flops",)
