"""PyTorch on a GPU: fp16 latency and peak memory of PT-DiT and the full-attention DiT, eager and compiled, against
the floor set by the GPU's measured matmul rate. Skipped without a CUDA device."""

from __future__ import annotations

from typing import Any, Callable


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
             report: Callable[[str], None]) -> dict[str, Any]:
    import torch

    from ptdit import PTDiT, preset

    if not torch.cuda.is_available():
        return {"skipped": "no CUDA device (torch.cuda.is_available() is False)"}
    rate = matmul_rate(torch)
    report(f"  {torch.cuda.get_device_name(0)}: fp16 matmul {rate / 1e12:.0f} TFLOP/s measured")
    rows = []
    for attention in ("proxy", "full"):
        cfg = preset(preset_name).replace(attention=attention)
        rows += gpu_model_rows(torch, PTDiT(cfg).eval().half().cuda(), resolutions, rate, compile_model, report)
        torch.cuda.empty_cache()
    return {"device": torch.cuda.get_device_name(0), "matmul_tflops": round(rate / 1e12, 1), "rows": rows}


def gpu_model_rows(torch: Any, model: Any, resolutions: tuple[int, ...], rate: float, compile_model: bool,
                   report: Callable[[str], None]) -> list[dict[str, Any]]:
    from ptdit import count_macs

    cfg, rows = model.cfg, []
    for res in resolutions:
        side = res // 8
        gen = torch.Generator(device="cuda").manual_seed(0)
        args = (torch.randn(2, cfg.in_channels, side, side, device="cuda", generator=gen),
                torch.full((2,), 500.0, device="cuda"),
                torch.randn(2, 200, cfg.text_dim, device="cuda", generator=gen),
                torch.ones(2, 200, dtype=torch.int64, device="cuda"))
        report(f"  {cfg.attention} attention at {res}: eager")
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        with torch.no_grad():
            eager_ms = time_cuda(torch, lambda: model(*args))
        peak = torch.cuda.max_memory_allocated()
        macs = count_macs(cfg, res, batch=2).total
        floor_ms = 2 * macs / rate * 1000
        row: dict[str, Any] = {"attention": cfg.attention, "res": res, "eager_ms": round(eager_ms, 2),
                               "peak_memory_bytes": peak, "gmac": round(macs / 1e9, 1),
                               "floor_ms": round(floor_ms, 2), "eager_fraction_of_floor": round(floor_ms / eager_ms, 3)}
        if compile_model:
            report(f"  {cfg.attention} attention at {res}: torch.compile")
            compiled = torch.compile(model)
            with torch.no_grad():
                compiled_ms = time_cuda(torch, lambda: compiled(*args), warmup=3)
            row["compiled_ms"] = round(compiled_ms, 2)
            row["compiled_fraction_of_floor"] = round(floor_ms / compiled_ms, 3)
            torch._dynamo.reset()
        rows.append(row)
    return rows


def gpu_table(data: dict[str, Any]) -> str:
    if "skipped" in data:
        return f"GPU: skipped ({data['skipped']})"
    lines = [f"{data['device']}, fp16 matmul {data['matmul_tflops']} TFLOP/s measured",
             "| model | res | GMAC | floor ms | eager ms (of floor) | compiled ms (of floor) | peak memory GB |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in data["rows"]:
        compiled = f"{r['compiled_ms']} ({r['compiled_fraction_of_floor']:.0%})" if "compiled_ms" in r else "n/a"
        lines.append(f"| {'PT-DiT' if r['attention'] == 'proxy' else 'full-attention DiT'} | {r['res']} | {r['gmac']} | "
                     f"{r['floor_ms']} | {r['eager_ms']} ({r['eager_fraction_of_floor']:.0%}) | {compiled} | "
                     f"{r['peak_memory_bytes'] / 1e9:.2f} |")
    return "\n".join(lines)
