"""The engines stage: a TensorRT plan from a ptdit-export ONNX (ptdit-build), with TensorRT 10.x / 11.x or
TensorRT-RTX. The tree and its rules: docs/ARCHITECTURE.md."""
