"""PyTorch on a GPU: fp16 and bf16 latency and peak memory of PT-DiT and the full-attention DiT (eager, and
compiled on request) against the floor set by the GPU's measured matmul rate; and FP8 against fp16 on PT-DiT's own
Linear shapes through torch._scaled_mm, so that the FP8 gain is measured, not assumed. Skipped without a CUDA
device. Sized to finish in under 8 minutes on an H100 with the defaults (xl, 1024 and 2048, no compile)."""

from __future__ import annotations

from collections import Counter
from typing import Any, Callable

from ptdit.contract.fp8 import LAYER_SETS, layer_kind
from ptdit.contract.progress import Reporter

DTYPES = ("float16", "bfloat16")


def matmul_rate(torch: Any, size: int = 8192, repeats: int = 10) -> float:
    """Measured fp16 matmul throughput of this GPU, FLOP/s (best of `repeats`)."""
    a = torch.randn(size, size, device="cuda", dtype=torch.float16)
    b = torch.randn(size, size, device="cuda", dtype=torch.float16)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        a @ b
        end.record()
        torch.cuda.synchronize()
        best = min(best, start.elapsed_time(end) / 1000)
    return 2 * size**3 / best


def time_cuda(torch: Any, fn: Callable[[], Any], warmup: int = 3, repeats: int = 10) -> float:
    """Median milliseconds of fn() on the GPU."""
    import statistics

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def gpu_rows(preset_name: str, resolutions: tuple[int, ...], compile_model: bool,
             report: Reporter) -> dict[str, Any]:
    import torch

    from ptdit import PTDiT, preset

    if not torch.cuda.is_available():
        return {"skipped": "no CUDA device (torch.cuda.is_available() is False)"}
    rate = matmul_rate(torch)
    report(f"  {torch.cuda.get_device_name(0)}: fp16 matmul {rate / 1e12:.0f} TFLOP/s measured")
    rows = []
    for dtype in DTYPES:
        for attention in ("proxy", "full"):
            cfg = preset(preset_name).replace(attention=attention)
            model = PTDiT(cfg).eval().to(getattr(torch, dtype)).cuda()
            rows += gpu_model_rows(torch, model, resolutions, rate, compile_model and dtype == "float16", report)
            del model
            torch.cuda.empty_cache()
    report("  FP8 against fp16 on PT-DiT's Linear shapes (torch._scaled_mm)")
    fp8 = {res: fp8_linear_rows(torch, PTDiT(preset(preset_name)).eval().half().cuda(), res, "cuda",
                                lambda fn: time_cuda(torch, fn)) for res in resolutions}
    return {"device": torch.cuda.get_device_name(0), "matmul_tflops": round(rate / 1e12, 1), "rows": rows,
            "fp8_linears": fp8}


def linear_shapes(torch: Any, model: Any, res: int, device: str) -> Counter[tuple[str, int, int, int]]:
    """(kind, rows M, in K, out N) of every Linear call that --fp8-layers all quantizes in one forward at `res`,
    batch 2, 200 text tokens, with how often each occurs."""
    shapes: Counter[tuple[str, int, int, int]] = Counter()

    def hook_for(kind: str) -> Callable[..., None]:
        def hook(module: Any, args: Any) -> None:
            shapes.update([(kind, args[0].numel() // args[0].shape[-1], *module.weight.shape[::-1])])
        return hook

    handles = [m.register_forward_pre_hook(hook_for(str(layer_kind(name)))) for name, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and layer_kind(name) in LAYER_SETS["all"]]
    try:
        with torch.no_grad():
            model(*forward_args(torch, model.cfg, res, device, next(model.parameters()).dtype))
    finally:
        for h in handles:
            h.remove()
    return shapes


def fp8_linear_rows(torch: Any, model: Any, res: int, device: str, timer: Callable[[Callable[[], Any]], float],
                    ) -> dict[str, Any]:
    """Per Linear shape: fp16 x @ W^T against torch._scaled_mm on E4M3 operands (per-tensor scales, fp16 out), as
    an FP8 engine computes it; and each --fp8-layers set's Linear time per forward both ways (each shape times its
    count)."""
    rows: list[dict[str, Any]] = []
    for (kind, m, k, n), count in sorted(linear_shapes(torch, model, res, device).items()):
        x = torch.randn(m, k, device=device, dtype=torch.float16)
        w = torch.randn(n, k, device=device, dtype=torch.float16) * 0.05
        scale_x, scale_w = (t.abs().max().float() / 448 for t in (x, w))
        x8, w8 = (x / scale_x).to(torch.float8_e4m3fn), (w / scale_w).to(torch.float8_e4m3fn)
        fp16_ms = timer(lambda: x @ w.t())  # noqa: B023 (called within the iteration)
        fp8_ms = timer(lambda: torch._scaled_mm(x8, w8.t(), scale_a=scale_x, scale_b=scale_w,  # noqa: B023 (called within the iteration)
                                                out_dtype=torch.float16))
        y16 = (x @ w.t()).float()
        y8 = torch._scaled_mm(x8, w8.t(), scale_a=scale_x, scale_b=scale_w, out_dtype=torch.float16).float()
        rel_l2 = float((y8 - y16).norm() / y16.norm())
        rows.append({"kind": kind, "m": m, "k": k, "n": n, "count": count, "fp16_ms": round(fp16_ms, 4),
                     "fp8_ms": round(fp8_ms, 4), "speedup": round(fp16_ms / fp8_ms, 2),
                     "fp8_rel_l2": round(rel_l2, 4)})
    sets = {}
    for name, kinds in LAYER_SETS.items():
        fp16_total = sum(r["count"] * r["fp16_ms"] for r in rows if r["kind"] in kinds)
        fp8_total = sum(r["count"] * r["fp8_ms"] for r in rows if r["kind"] in kinds)
        sets[name] = {"fp16_linear_ms": round(fp16_total, 2), "fp8_linear_ms": round(fp8_total, 2),
                      "speedup": round(fp16_total / fp8_total, 2)}
    return {"res": res, "shapes": rows, "layer_sets": sets}


def forward_args(torch: Any, cfg: Any, res: int, device: str, dtype: Any) -> tuple[Any, ...]:
    side = res // 8
    gen = torch.Generator(device=device).manual_seed(0)
    return (torch.randn(2, cfg.in_channels, side, side, device=device, generator=gen).to(dtype),
            torch.full((2,), 500.0, device=device),
            torch.randn(2, 200, cfg.text_dim, device=device, generator=gen).to(dtype),
            torch.ones(2, 200, dtype=torch.int64, device=device))


def gpu_model_rows(torch: Any, model: Any, resolutions: tuple[int, ...], rate: float, compile_model: bool,
                   report: Reporter) -> list[dict[str, Any]]:
    from ptdit import count_macs

    cfg, rows = model.cfg, []
    dtype = next(model.parameters()).dtype
    for res in resolutions:
        args = forward_args(torch, cfg, res, "cuda", dtype)
        report(f"  {cfg.attention} attention at {res}, {str(dtype).removeprefix('torch.')}: eager")
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        with torch.no_grad():
            eager_ms = time_cuda(torch, lambda: model(*args))  # noqa: B023 (called within the iteration)
        peak = torch.cuda.max_memory_allocated()
        macs = count_macs(cfg, res, batch=2).total
        floor_ms = 2 * macs / rate * 1000
        row: dict[str, Any] = {"attention": cfg.attention, "dtype": str(dtype).removeprefix("torch."), "res": res,
                               "eager_ms": round(eager_ms, 2),
                               "peak_memory_bytes": peak, "gmac": round(macs / 1e9, 1),
                               "floor_ms": round(floor_ms, 2), "eager_fraction_of_floor": round(floor_ms / eager_ms, 3)}
        if compile_model:
            report(f"  {cfg.attention} attention at {res}: torch.compile")
            compiled = torch.compile(model)
            with torch.no_grad():
                compiled_ms = time_cuda(torch, lambda: compiled(*args), warmup=3)  # noqa: B023 (called within the iteration)
            row["compiled_ms"] = round(compiled_ms, 2)
            row["compiled_fraction_of_floor"] = round(floor_ms / compiled_ms, 3)
            torch._dynamo.reset()
        rows.append(row)
    return rows


def gpu_table(data: dict[str, Any]) -> str:
    if "skipped" in data:
        return f"GPU: skipped ({data['skipped']})"
    lines = [f"{data['device']}, fp16 matmul {data['matmul_tflops']} TFLOP/s measured",
             "| model | dtype | res | GMAC | floor ms | eager ms (of floor) | compiled ms (of floor) | "
             "peak memory GB |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in data["rows"]:
        compiled = f"{r['compiled_ms']} ({r['compiled_fraction_of_floor']:.0%})" if "compiled_ms" in r else "n/a"
        model = "PT-DiT" if r["attention"] == "proxy" else "full-attention DiT"
        lines.append(f"| {model} | {r.get('dtype', 'float16')} | {r['res']} | {r['gmac']} | "
                     f"{r['floor_ms']} | {r['eager_ms']} ({r['eager_fraction_of_floor']:.0%}) | {compiled} | "
                     f"{r['peak_memory_bytes'] / 1e9:.2f} |")
    for res, fp8 in data.get("fp8_linears", {}).items():
        totals = "; ".join(f"--fp8-layers {name}: {t['fp16_linear_ms']} ms -> {t['fp8_linear_ms']} ms per forward, "
                           f"{t['speedup']}x" for name, t in fp8["layer_sets"].items())
        lines += ["", f"FP8 against fp16 on PT-DiT's Linear layers at {res} (torch._scaled_mm, per-tensor scales): "
                      f"{totals}",
                  "| kind | M | K | N | per forward | fp16 ms | fp8 ms | speedup | FP8 rel L2 |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        lines += [f"| {r['kind']} | {r['m']} | {r['k']} | {r['n']} | {r['count']} | {r['fp16_ms']} | {r['fp8_ms']} | "
                  f"{r['speedup']} | {r['fp8_rel_l2']} |" for r in fp8["shapes"]]
    return "\n".join(lines)
