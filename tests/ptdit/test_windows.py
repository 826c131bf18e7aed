import itertools

import pytest
import torch

from ptdit import InputError
from ptdit.layers import Attention
from ptdit.resolution import Geometry
from ptdit.windows import (
    proxy_tokens,
    shift_windows,
    shifted_window_bias,
    window_partition,
    window_reverse,
)

GEOMETRIES = [
    Geometry(grid=(1, 16, 16), window=(1, 2, 2)),
    Geometry(grid=(1, 32, 32), window=(1, 4, 4)),
    Geometry(grid=(1, 16, 16), window=(1, 4, 8)),
    Geometry(grid=(8, 8, 8), window=(4, 2, 4)),
]


def coordinate_grid(geo: Geometry, batch: int = 2) -> torch.Tensor:
    """[B, F, H, W, 4] tokens whose channels are their own (f, h, w, b) coordinates."""
    f, h, w = geo.grid
    coords = torch.stack(torch.meshgrid(torch.arange(f), torch.arange(h), torch.arange(w), indexing="ij"), -1)
    grid = coords[None].expand(batch, -1, -1, -1, -1)
    b = torch.arange(batch).view(batch, 1, 1, 1, 1).expand(-1, f, h, w, 1)
    return torch.cat([grid, b], -1).float()


@pytest.mark.parametrize("geo", GEOMETRIES)
def test_partition_reverse_are_inverses(geo):
    x = torch.randn(2, *geo.grid, 3)
    windows = window_partition(x, geo.window)
    assert windows.shape == (2, geo.num_windows, geo.window_size, 3)
    assert torch.equal(window_reverse(windows, geo.grid, geo.window), x)
    assert torch.equal(shift_windows(shift_windows(windows, geo), geo, reverse=True), windows)


@pytest.mark.parametrize("geo", GEOMETRIES)
@pytest.mark.parametrize("reverse", [False, True])
def test_shift_is_a_roll_of_the_grid(geo, reverse):
    """The one-gather shift equals rolling the token grid by half a window between two (un)partitions."""
    x = torch.randn(2, *geo.grid, 3)
    shifts = [-s if not reverse else s for s in geo.shift]
    rolled = torch.roll(x, shifts=shifts, dims=(1, 2, 3))
    shifted = shift_windows(window_partition(x, geo.window), geo, reverse=reverse)
    assert torch.equal(shifted, window_partition(rolled, geo.window))


@pytest.mark.parametrize("geo", GEOMETRIES)
def test_partition_groups_each_window(geo):
    windows = window_partition(coordinate_grid(geo), geo.window)
    for b, wi in itertools.product(range(2), range(geo.num_windows)):
        tokens = windows[b, wi]
        origin = tokens[0, :3]
        extent = tokens[:, :3].amax(0) - origin + 1
        assert torch.equal(extent, torch.tensor(geo.window, dtype=torch.float32))
        assert all(int(o) % w == 0 for o, w in zip(origin, geo.window))
        assert torch.all(tokens[:, 3] == b)


def naive_shifted_mask(geo: Geometry) -> torch.Tensor:
    """[N, N] built from first principles: shifted windows start half a window in; the wrapped-around last
    window is split into its two pieces, which must not see each other."""
    segments = []
    for n, w in zip(geo.grid, geo.window):
        s = w // 2
        segments.append(torch.tensor([(p - s) // w for p in range(n)]))  # p < s -> its own segment (-1)
    f, h, w = torch.meshgrid(*segments, indexing="ij")
    seg = torch.stack([f.flatten(), h.flatten(), w.flatten()], -1)
    same = (seg[:, None, :] == seg[None, :, :]).all(-1)
    return torch.where(same, 0.0, float("-inf"))


@pytest.mark.parametrize("geo", GEOMETRIES)
def test_shifted_window_attention_equals_masked_full_attention(geo):
    torch.manual_seed(0)
    attn = Attention(16, heads=2, head_dim=8)
    x = torch.randn(2, *geo.grid, 16)
    bias = shifted_window_bias(geo, -10000.0, torch.float32)
    bias = bias.expand(2, -1, -1, -1).reshape(-1, 1, geo.window_size, geo.window_size)
    with torch.no_grad():
        windows = shift_windows(window_partition(x, geo.window), geo)
        out = shift_windows(attn(windows, bias=bias), geo, reverse=True)
        ours = window_reverse(out, geo.grid, geo.window).flatten(1, 3)
        naive = attn(x.flatten(1, 3), bias=naive_shifted_mask(geo))
    torch.testing.assert_close(ours, naive, atol=1e-5, rtol=1e-5)


def test_shifted_mask_is_needed():
    """Without the bias the wrapped-around tokens would attend each other: the test above can fail."""
    geo = GEOMETRIES[1]
    torch.manual_seed(0)
    attn = Attention(16, heads=2, head_dim=8)
    x = torch.randn(1, *geo.grid, 16)
    with torch.no_grad():
        out = shift_windows(attn(shift_windows(window_partition(x, geo.window), geo)), geo, reverse=True)
        naive = attn(x.flatten(1, 3), bias=naive_shifted_mask(geo))
    assert not torch.allclose(window_reverse(out, geo.grid, geo.window).flatten(1, 3), naive, atol=1e-3)


@pytest.mark.parametrize("geo", GEOMETRIES)
def test_strided_proxies_pick_the_offset_token(geo):
    windows = window_partition(coordinate_grid(geo), geo.window)
    offset = tuple(w - 1 for w in geo.window)  # last token of each window
    proxies = proxy_tokens(windows, geo, None, "strided", offset)
    assert proxies.shape == (2, geo.num_windows, 4)
    origins = windows[:, :, 0, :3]
    assert torch.equal(proxies[..., :3], origins + torch.tensor(offset, dtype=torch.float32))
    assert torch.equal(proxies[..., 3], windows[:, :, 0, 3])
    centre = proxy_tokens(windows, geo, None, "strided")
    assert torch.equal(centre[..., :3], origins + torch.tensor([w // 2 for w in geo.window], dtype=torch.float32))


@pytest.mark.parametrize("geo", GEOMETRIES)
def test_mean_proxies_are_window_means(geo):
    x = torch.randn(2, *geo.grid, 5)
    windows = window_partition(x, geo.window)
    proxies = proxy_tokens(windows, geo, None, "mean")
    f, h, w = geo.window
    pooled = torch.nn.functional.avg_pool3d(x.permute(0, 4, 1, 2, 3), (f, h, w))  # independent window mean
    torch.testing.assert_close(proxies, pooled.flatten(2).transpose(1, 2))


def test_interleaved_proxy_windows_follow_the_published_grouping():
    """proxy_window smaller than the window: group (gy, gx) averages the tokens with row % 2 == gy, col % 2 == gx
    inside each 8x8 window (published get_proxy_token with compress (1,8,8), proxy compress (1,4,4))."""
    geo = Geometry(grid=(1, 16, 16), window=(1, 8, 8))
    x = torch.randn(1, *geo.grid, 3)
    proxies = proxy_tokens(window_partition(x, geo.window), geo, (1, 4, 4), "mean").view(1, 4, 4, 3)
    for wy, wx, gy, gx in itertools.product(range(2), range(2), range(2), range(2)):
        block = x[0, 0, wy * 8:(wy + 1) * 8, wx * 8:(wx + 1) * 8]
        expected = block[gy::2, gx::2].reshape(-1, 3).mean(0)
        torch.testing.assert_close(proxies[0, wy * 2 + wx, gy * 2 + gx], expected)
    with pytest.raises(InputError, match="must divide"):
        proxy_tokens(window_partition(x, geo.window), geo, (1, 3, 3), "mean")


@pytest.mark.parametrize("geo", GEOMETRIES)
def test_random_proxies_stay_in_their_window_and_follow_the_generator(geo):
    windows = window_partition(coordinate_grid(geo), geo.window)
    draws = [proxy_tokens(windows, geo, None, "random", generator=torch.Generator().manual_seed(s)) for s in (1, 1, 2)]
    origins = windows[:, :, 0, :3]
    for d in draws:
        rel = d[..., :3] - origins
        assert torch.all(rel >= 0) and torch.all(rel < torch.tensor(geo.window, dtype=torch.float32))
        assert torch.equal(d[..., 3], windows[:, :, 0, 3])
    assert torch.equal(draws[0], draws[1])
    assert not torch.equal(draws[0], draws[2])


def test_strided_offset_outside_the_window_is_refused():
    geo = GEOMETRIES[0]
    with pytest.raises(InputError, match="outside"):
        proxy_tokens(torch.zeros(1, geo.num_windows, geo.window_size, 2), geo, None, "strided", (0, 2, 0))


def proxy_tokens_rank9(x, geo, proxy_window, mode, offset=None, generator=None):
    """The implementation before the rank fix (a [b, nw, mt, gt, mh, gh, mw, gw, c] view, which TensorRT cannot
    represent), kept here as the reference that the rank-8 version must reproduce exactly."""
    from ptdit.windows import proxy_split, strided_offset

    b, nw, _, c = x.shape
    (mt, mh, mw), (gt, gh, gw) = proxy_split(geo.window, proxy_window)
    x = x.reshape(b, nw, mt, gt, mh, gh, mw, gw, c)
    if mode == "mean":
        out = x.mean(dim=(2, 4, 6))
    elif mode == "strided":
        ot, oh, ow = strided_offset(geo, proxy_window, offset)
        out = x.narrow(2, ot, 1).narrow(4, oh, 1).narrow(6, ow, 1)
    else:
        members = mt * mh * mw
        x = x.permute(0, 1, 3, 5, 7, 2, 4, 6, 8).reshape(b, nw * gt * gh * gw, members, c)
        pick = torch.randint(0, members, (b, nw * gt * gh * gw, 1, 1), generator=generator)
        out = torch.gather(x, 2, pick.expand(-1, -1, 1, c))
    return out.reshape(b, nw * gt * gh * gw, c)


PROXY_CASES = [(geo, None) for geo in GEOMETRIES] + [
    (Geometry(grid=(1, 16, 16), window=(1, 8, 8)), (1, 4, 4)),
    (Geometry(grid=(1, 16, 16), window=(1, 8, 8)), (1, 2, 8)),
    (Geometry(grid=(8, 8, 8), window=(4, 4, 4)), (2, 2, 4)),
]


@pytest.mark.parametrize("geo,proxy_window", PROXY_CASES)
@pytest.mark.parametrize("mode", ["strided", "mean", "random"])
def test_rank8_proxies_equal_the_rank9_implementation(geo, proxy_window, mode):
    windows = window_partition(torch.randn(3, *geo.grid, 5), geo.window)
    kwargs = {"generator": torch.Generator().manual_seed(4)} if mode == "random" else {}
    expected = proxy_tokens_rank9(windows, geo, proxy_window, mode, **kwargs)
    if mode == "random":
        kwargs = {"generator": torch.Generator().manual_seed(4)}
    assert torch.equal(proxy_tokens(windows, geo, proxy_window, mode, **kwargs), expected)


class MaxRank(torch.utils._python_dispatch.TorchDispatchMode):
    """Records the highest rank of any tensor an operator produces while the model runs."""

    def __init__(self) -> None:
        super().__init__()
        self.max_rank, self.op = 0, ""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor) and t.ndim > self.max_rank:
                self.max_rank, self.op = t.ndim, str(func)
        return out


@pytest.mark.parametrize("res,frames", [(256, None), (512, None), (1024, None), (2048, None), (256, 4), (512, 8)])
@pytest.mark.parametrize("proxy_mode,proxy_window", [("strided", None), ("mean", None), ("random", None),
                                                     ("mean", "half"), ("strided", "half")])
def test_no_value_has_more_than_8_dimensions(res, frames, proxy_mode, proxy_window):
    """TensorRT tensors have at most 8 dimensions: no operator of the model (every resolution, video, every proxy
    mode, interleaved proxy windows) may produce more. The exports' own rank check covers the ONNX graphs."""
    from ptdit import PTDiT, preset, window_for

    window = window_for(res, frames=frames)
    cfg = preset("tiny").replace(depth=1, proxy_mode=proxy_mode if proxy_mode != "random" else "strided",
                                 train_proxy_mode=proxy_mode if proxy_mode == "random" else "random",
                                 proxy_window=(window[0], max(1, window[1] // 2), window[2]) if proxy_window else None)
    model = PTDiT(cfg)
    model.train(proxy_mode == "random")
    side = res // 8
    latent = torch.randn(1, 4, *((frames,) if frames else ()), side, side)
    with torch.no_grad(), MaxRank() as probe:
        model(latent, torch.tensor([500.0]), torch.randn(1, 3, cfg.text_dim), torch.ones(1, 3, dtype=torch.int64))
    assert probe.max_rank <= 8, f"{probe.op} produced a rank-{probe.max_rank} tensor"
