"""The export stage: PT-DiT to ONNX with static shapes per resolution (ptdit-export), checked before it is
published, the prompt-to-image pipeline folder, and ptdit-bench. The tree and its rules: docs/ARCHITECTURE.md."""
