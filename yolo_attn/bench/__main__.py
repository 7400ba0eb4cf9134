"""`python -m yolo_attn.bench`: the same as `yolo-attn-bench`."""

import sys

from yolo_attn.bench.cli import main

sys.exit(main())
