"""The backends behind runtime.session.open_session: TensorRT (tensorrt/), ONNX Runtime and PyTorch, each a
Session (interface.py) that checks and stages inputs (feeds.py) and counts what crosses to its device
(transfers.py)."""
