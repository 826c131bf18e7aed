"""ptdit-bench: one module per stage measured (the model's complexity, the export, the engine build, the runtime,
PyTorch on a GPU) and the command that runs them (cli.py). Every number is measured in the run that prints it.

It lives in export/ because that is the stage allowed to import both the model and ONNX; the engine build and the
runtime are measured through their own commands in child processes (child.py): stages talk through files.
"""
