"""The TensorRT backend, C-free: tensorrt (or tensorrt_lean, or tensorrt_rtx; flavour.py decides), cuda-python
(cuda.py) and numpy. engine.py loads a plan (Polygraphy's loader), session.py runs it (the runner, and the step
loop that keeps a step plan's state on the device). No torch on this path."""
