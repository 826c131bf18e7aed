"""Serving a pipeline folder on NVIDIA Triton Inference Server: the server's environment (environment), the
served I/O (protocol), the model repository (repository) and the models in it (triton_model, component_model,
with instance for what each does first and bls_session for calls between them), a local server (server), a
client (client) and the load measurement (load). ptdit-serve is the command (runtime/cli/serve.py)."""
