"""Windows and proxy tokens as static reshapes, permutes, constant gathers and slices (no data-dependent shapes).

Token layout inside the model is window-major: [B, num_windows, P, C], windows in (f, h, w) order and
tokens in (t, y, x) order inside a window, the layout of the published code.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import Tensor

from .contract.errors import InputError
from .layers import shape_of
from .resolution import Geometry, Triple


def window_partition(x: Tensor, window: Triple) -> Tensor:
    """[B, F, H, W, C] -> [B, num_windows, P, C]"""
    b, f, h, w, c = shape_of(x)
    pt, ph, pw = window
    x = x.reshape(b, f // pt, pt, h // ph, ph, w // pw, pw, c).permute(0, 1, 3, 5, 2, 4, 6, 7)
    return x.reshape(b, -1, pt * ph * pw, c)


def window_reverse(x: Tensor, grid: Triple, window: Triple) -> Tensor:
    """[B, num_windows, P, C] -> [B, F, H, W, C]"""
    b, c = shape_of(x)[0], shape_of(x)[-1]
    (f, h, w), (pt, ph, pw) = grid, window
    x = x.reshape(b, f // pt, h // ph, w // pw, pt, ph, pw, c).permute(0, 1, 4, 2, 5, 3, 6, 7)
    return x.reshape(b, f, h, w, c)


@functools.lru_cache(maxsize=None)
def shift_order(geo: Geometry, reverse: bool = False) -> np.ndarray:
    """[N] token indices: window-major tokens taken in this order are the window-major tokens of the grid rolled
    back by half a window (what torch.roll(grid, -shift) then window_partition gives); reverse=True undoes it."""
    (f, h, w), (pt, ph, pw) = geo.grid, geo.window
    tokens = np.arange(geo.num_windows * geo.window_size)
    grid = tokens.reshape(f // pt, h // ph, w // pw, pt, ph, pw).transpose(0, 3, 1, 4, 2, 5).reshape(f, h, w)
    rolled = np.roll(grid, shift=[-s for s in geo.shift], axis=(0, 1, 2))
    order = rolled.reshape(f // pt, pt, h // ph, ph, w // pw, pw).transpose(0, 2, 4, 1, 3, 5).reshape(-1)
    order = np.argsort(order) if reverse else order
    order.setflags(write=False)  # cached (one per geometry, not one per block): shared by every call
    return order


def shift_windows(x: Tensor, geo: Geometry, reverse: bool = False) -> Tensor:
    """Re-window the tokens [B, nW, P, C] on a grid rolled by half a window (reverse=True undoes it).

    One gather with a constant order: a roll of the grid between two window (un)partitions would copy the
    activation four times (two transposes, a slice + concat per shifted axis) where this copies it once."""
    if not any(geo.shift):
        return x
    b, nw, p, c = shape_of(x)
    order = torch.tensor(shift_order(geo, reverse), device=x.device)  # a constant of the graph
    return x.reshape(b, nw * p, c).index_select(1, order).reshape(b, nw, p, c)


def shifted_window_bias(geo: Geometry, value: float, dtype: torch.dtype, device: torch.device | None = None) -> Tensor:
    """[num_windows, P, P] additive bias for shifted-window attention: `value` between tokens that the roll
    brought together from opposite edges of the grid, 0 elsewhere. Built in numpy: a constant of the graph."""
    labels = np.zeros(geo.grid, dtype=np.int64)
    for axis, (n, w, s) in enumerate(zip(geo.grid, geo.window, geo.shift)):
        if not s:
            continue
        # Regions along this axis of the rolled grid: [0, n-w), [n-w, n-s), [n-s, n); the last one wrapped around.
        region = np.zeros(n, dtype=np.int64)
        region[n - w:] = 1
        region[n - s:] = 2
        shape = [1, 1, 1]
        shape[axis] = n
        labels = labels * 3 + region.reshape(shape)
    (f, h, w), (pt, ph, pw) = geo.grid, geo.window
    windows = labels.reshape(f // pt, pt, h // ph, ph, w // pw, pw).transpose(0, 2, 4, 1, 3, 5)
    windows = windows.reshape(geo.num_windows, geo.window_size)
    bias = np.where(windows[:, :, None] != windows[:, None, :], value, 0.0).astype(np.float32)
    return torch.from_numpy(bias).to(dtype=dtype, device=device)


def proxy_split(window: Triple, proxy_window: Triple | None) -> tuple[Triple, Triple]:
    """(members, groups) per axis: each attention window holds prod(groups) proxies, each standing for
    prod(members) tokens. As in the published code, proxy group k of a window takes the tokens whose
    in-window index is congruent to k modulo `groups` (interleaved, not contiguous)."""
    if proxy_window is None:
        return window, (1, 1, 1)
    if any(w % p for w, p in zip(window, proxy_window)):
        raise InputError(f"proxy_window {proxy_window} must divide the attention window {window} on every axis")
    groups = (window[0] // proxy_window[0], window[1] // proxy_window[1], window[2] // proxy_window[2])
    return proxy_window, groups


def strided_offset(geo: Geometry, proxy_window: Triple | None, offset: Triple | None) -> Triple:
    """The validated in-window offset of strided proxies (default: the centre of the proxy window)."""
    (mt, mh, mw), _ = proxy_split(geo.window, proxy_window)
    if offset is None:
        return (mt // 2, mh // 2, mw // 2)
    if not all(0 <= o < m for o, m in zip(offset, (mt, mh, mw))):
        raise InputError(f"proxy_offset {tuple(offset)} lies outside the proxy window {(mt, mh, mw)}")
    return offset


def proxy_tokens(
    x: Tensor,
    geo: Geometry,
    proxy_window: Triple | None,
    mode: str,
    offset: Triple | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Proxy tokens of window-major tokens [B, nW, P, C] -> [B, nW * proxies_per_window, C].

    mean:    average of each proxy's tokens (what the published checkpoint was trained with).
    strided: the token at a fixed `offset` (default: centre) of each proxy window, a static strided slice.
    random:  one uniformly drawn token per proxy window (training, as in the paper).
    """
    b, nw, _, c = shape_of(x)
    (mt, mh, mw), (gt, gh, gw) = proxy_split(geo.window, proxy_window)
    # Batch and window axes merged: TensorRT tensors have at most 8 dimensions.
    x = x.reshape(b * nw, mt, gt, mh, gh, mw, gw, c)
    if mode == "mean":
        out = x.mean(dim=(1, 3, 5))
    elif mode == "strided":
        ot, oh, ow = strided_offset(geo, proxy_window, offset)
        out = x.narrow(1, ot, 1).narrow(3, oh, 1).narrow(5, ow, 1)
    elif mode == "random":
        members = mt * mh * mw
        x = x.permute(0, 2, 4, 6, 1, 3, 5, 7).reshape(b, nw * gt * gh * gw, members, c)
        pick = torch.randint(0, members, (b, nw * gt * gh * gw, 1, 1), generator=generator, device=x.device)
        out = torch.gather(x, 2, pick.expand(-1, -1, 1, c))
    else:
        raise InputError(f"unknown proxy mode {mode!r}: use random, strided or mean")
    return out.reshape(b, nw * gt * gh * gw, c)
