"""Prompt in, image out, from a pipeline folder (ptdit-export --pipeline): the folder (folder.py), caption
cleaning and tokenization (prompt.py), the published tiled VAE decode (tiling.py), and the run itself
(text_to_image.py)."""
