"""The contract between the stages: what travels in the files one stage writes and the next one reads.

The manifests (typed, read and written here), file hashing and JSON, the dtype names, the TensorRT flavours and
the one TensorRT logger of a process, the bf16 emulation every ONNX Runtime check shares, and how every command
ends (its errors and exit codes). Every stage imports it (ptdit, export, engines and runtime): it imports the
standard library only, so engines/ and the runtime's TensorRT path stay free of torch. docs/ARCHITECTURE.md
describes the stages and the rules tests/test_layering.py enforces.
"""
