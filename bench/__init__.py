"""ptdit-bench: one module per stage measured (the model's complexity, the export, the engine build, the runtime,
PyTorch on a GPU) and the command that runs them (cli.py). Every number is measured in the run that prints it.

It sits above the stages (docs/ARCHITECTURE.md, "Layering rules"): no stage imports it. It imports the model and the
exporter to count and trace in its own process; the export, the engine build, the runtime and the server are
measured through their own commands in child processes (child.py), so each one's peak RSS is its own.
"""
