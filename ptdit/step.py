"""One whole denoising step as a module: the model, classifier-free guidance and the rectified-flow Euler update.

    step = DenoisingStep(model)
    latent_next, step_next = step(latent, step_index, schedule, text_embeds, text_mask, guidance)

Everything a sampler loop carries between steps is an input with a twin output of the same shape: the latent
(fp32 at every model precision) and the step index into the schedule. A runtime can therefore keep both on the
device and swap the two buffers of each pair after every step; the schedule, the text and the guidance scale
are set once. With a text batch of 2 (cond, uncond) the pair is evaluated as one batch and mixed with the
guidance scale; with a text batch of 1 the step is unguided (the velocity is the conditional prediction).

The update is the published sampler's (mindspeed_mm rflow): x <- x + v (t - t_next) / 1000, in fp32.
"""

from __future__ import annotations

from torch import Tensor, nn

from .contract.errors import InputError
from .model import PTDiT

NUM_TRAIN_TIMESTEPS = 1000.0


def euler_update(latent: Tensor, velocity: Tensor, t: Tensor, t_next: Tensor) -> Tensor:
    """latent + velocity * (t - t_next) / 1000, every factor fp32 and in this order (the host sampler's too)."""
    dt = (t - t_next) / NUM_TRAIN_TIMESTEPS
    return latent + velocity * dt.reshape([1] * latent.ndim)


def guided_velocity(prediction: Tensor, guidance: Tensor | None) -> Tensor:
    """uncond + g (cond - uncond) from a (cond, uncond) batch; the prediction itself for a batch of one."""
    if guidance is None:
        return prediction
    cond, uncond = prediction[0:1], prediction[1:2]
    return uncond + guidance.reshape([1] * prediction.ndim) * (cond - uncond)


class DenoisingStep(nn.Module):
    def __init__(self, model: PTDiT):
        super().__init__()
        self.model = model

    def forward(
        self,
        latent: Tensor,
        step: Tensor,
        schedule: Tensor,
        text_embeds: Tensor,
        text_mask: Tensor,
        guidance: Tensor | None = None,
        return_block_outputs: bool = False,
    ) -> tuple[Tensor, ...]:
        """latent [1, C, (F,) H, W] fp32; step [1] int64 (index into schedule); schedule [K] fp32 timesteps in
        [0, 1000], decreasing, schedule[step + 1] being the next one; text_embeds [B, L, D] and text_mask [B, L]
        with B = 2 (cond, uncond) and guidance [1], or B = 1 and no guidance.
        -> (latent_next, step_next[, *block outputs])"""
        guided = text_embeds.shape[0] == 2
        if latent.shape[0] != 1 or text_embeds.shape[0] not in (1, 2):
            raise InputError(f"a denoising step takes one latent and a text batch of 2 (cond, uncond) or 1, got "
                             f"{latent.shape[0]} and {text_embeds.shape[0]}")
        if guided != (guidance is not None):
            raise InputError("guidance goes with a (cond, uncond) text pair, and only with one")
        t = schedule.index_select(0, step)
        t_next = schedule.index_select(0, step + 1)
        batch = text_embeds.shape[0]
        out = self.model(latent.expand(batch, *latent.shape[1:]), t.expand(batch), text_embeds, text_mask,
                         return_block_outputs=return_block_outputs)
        noise_pred, blocks = out if isinstance(out, tuple) else (out, [])
        velocity = guided_velocity(noise_pred[:, : latent.shape[1]].float(), guidance)
        latent_next = euler_update(latent.float(), velocity, t.float(), t_next.float())
        return (latent_next, step + 1, *blocks) if return_block_outputs else (latent_next, step + 1)

