"""`python -m yolo_attn.benchmark`: the same as `yolo-attn-bench` (the benchmark lives in `yolo_attn.bench`).

Kept so the documented entry points and `yolo_attn.benchmark.count_flops` keep working.
"""

import sys

from yolo_attn.bench.cli import main
from yolo_attn.bench.flops import count_flops

__all__ = ("count_flops", "main")

if __name__ == "__main__":
    sys.exit(main())
