#!/usr/bin/env bash
# The environment for the exporters that cannot live beside numpy 2.4: TensorFlow SavedModel / GraphDef (and the
# .tflite files they write) and CoreML. TensorFlow 2.19, the newest Ultralytics 8.4 accepts on Python < 3.13, needs
# numpy < 2.2 and protobuf < 6; coremltools 9 needs numpy <= 2.3.5. `pip install ".[deploy]"` covers every other format.
#
#   bash scripts/deploy_env.sh [VENV]      # default ~/.venvs/yolo-attn-tf
#   yolo-attn-bench deploy --python saved_model=VENV/bin/python --python coreml=VENV/bin/python ...
#   YOLO_ATTN_TF_PYTHON=VENV/bin/python pytest -m exhaustive tests/test_deploy.py
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${1:-$HOME/.venvs/yolo-attn-tf}"
python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/pip" install --quiet "$ROOT[export]" \
  "numpy==2.1.3" "protobuf==5.29.6" "onnx==1.22.0" \
  "tensorflow==2.19.0" "tf_keras==2.19.0" "sng4onnx==2.0.1" "onnx_graphsurgeon==0.6.1" "ai-edge-litert==2.3.0" \
  "coremltools==9.0" "scikit-learn"
# Ultralytics itself installs onnx2tf without its dependencies (they would replace the pins above).
"$VENV/bin/pip" install --quiet --no-deps "onnx2tf>=1.26.3,<1.29.0"
echo "$VENV/bin/python"
