"""ptdit-export --pipeline: everything between a prompt and a PNG in one folder (folder.py), its components
(components.py: the T5 text encoder, the CausalVAE decoder tiles, the negative prompt) and the tokenizer file."""
