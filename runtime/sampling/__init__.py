"""Sampling on a Session: the published schedule and update (schedule.py), the text conditioning (text.py), the
host loop of a noise-prediction artifact (host_loop.py), the device-resident loop of a step artifact
(step_sampler.py, whose make_sampler picks between them) and the written latent (latents.py)."""
