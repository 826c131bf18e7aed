"""Serving a pipeline folder on NVIDIA Triton Inference Server: the server's environment (environment), the
model repository (repository, with triton_model.py as its model), the served I/O (protocol), a local server
(server) and a client (client). ptdit-serve is the command (runtime/cli/serve.py)."""
