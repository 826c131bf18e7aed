import math

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from conftest import model_inputs
from ptdit import PTDiT, PTDiTConfig, attention_cost_ratio, count_macs, preset


@pytest.mark.parametrize("res,paper_percent", [(256, 34.3), (512, 9.7), (1024, 4.7)])
def test_analytic_ratio_reproduces_the_paper(res, paper_percent):
    # The paper prints the ratio truncated to one decimal of a percent.
    assert math.floor(attention_cost_ratio(res) * 1000) / 10 == paper_percent


def test_analytic_ratio_at_2048_is_the_formula_not_the_paper():
    # P = 256 tokens per window, N = 128 * 128 tokens. The formula gives 3.52%; the paper prints 2.3%.
    assert attention_cost_ratio(2048) == pytest.approx(1 / 256**2 + 1 / 256 + 2 * 256 / 128**2, rel=1e-12)
    assert round(attention_cost_ratio(2048) * 100, 2) == 3.52


def test_video_ratio_uses_the_temporal_window():
    p, n = 4 * 4 * 4, 16 * 32 * 32
    assert attention_cost_ratio(512, frames=16) == pytest.approx(1 / p**2 + 1 / p + 2 * p / n)


def measured_macs(cfg: PTDiTConfig, latent_fhw, batch: int, text_len: int) -> tuple[int, int]:
    """(linear + conv, attention matmul) multiply-adds counted by torch while the model runs."""
    model = PTDiT(cfg).eval()
    counter = FlopCounterMode(display=False)
    with sdpa_kernel(SDPBackend.MATH), counter, torch.no_grad():  # the math path makes attention visible as bmm
        model(*model_inputs(batch, latent_fhw, text_len=text_len))
    counts = {str(k): v for k, v in counter.get_flop_counts()["Global"].items()}
    linear = counts.get("aten.addmm", 0) + counts.get("aten.mm", 0) + counts.get("aten.convolution", 0)
    return linear // 2, counts.get("aten.bmm", 0) // 2


@pytest.mark.parametrize(
    "cfg,res,frames",
    [
        (preset("tiny"), 256, None),
        (preset("tiny"), 512, None),
        (preset("tiny").replace(attention="full"), 512, None),
        (preset("tiny").replace(shift_window=False), 256, None),
        (preset("tiny").replace(window=(1, 8, 8), proxy_window=(1, 4, 4)), 1024, None),
        (preset("tiny"), 256, 4),
        (PTDiTConfig(name="sc", depth=1, num_heads=2, head_dim=24, size_conditioning=True), 256, None),
    ],
)
def test_mac_count_matches_what_torch_counts(cfg, res, frames):
    side = res // 8
    counted = count_macs(cfg, res, frames=frames, batch=2, text_len=20)
    linear, attention = measured_macs(cfg, (frames or 1, side, side), batch=2, text_len=20)
    assert (counted.linear, counted.attention) == (linear, attention)


@pytest.mark.parametrize("res", [256, 512, 1024, 2048])
def test_counted_attention_ratio_is_the_analytic_ratio_without_text(res):
    """Without text tokens the counted attention matmuls of PT-DiT over those of the full-attention DiT are
    exactly the paper's formula: the model does the work the paper accounts for, and nothing more."""
    xl = preset("xl")
    proxy, full = count_macs(xl, res, text_len=0), count_macs(xl.replace(attention="full"), res, text_len=0)
    assert proxy.attention / full.attention == pytest.approx(attention_cost_ratio(res), rel=1e-12)


def test_extra_projections_make_small_resolutions_costlier():
    """GIIM and the shifted windows add four attention modules' projections and two linears per block, so the
    total is higher than the full-attention DiT until attention dominates (measured crossover: 1024 -> 2048)."""
    xl = preset("xl")
    ratio = {r: count_macs(xl, r).total / count_macs(xl.replace(attention="full"), r).total for r in (256, 1024, 2048)}
    assert ratio[256] > ratio[1024] > 1 > ratio[2048]
