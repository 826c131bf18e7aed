"""The runtime's commands: ptdit-run (run.py) and ptdit-diff (diff.py), with the options they share (options.py).
They parse and report; the work is done by the modules below them."""
