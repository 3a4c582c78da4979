#!/usr/bin/env python3
"""PyTorch baseline for psg-bench: PyTorch's equivalent of each psg built-in, timed the same way.

Each op is timed with torch.cuda.Event around the call (warm-up first, then the median of
--runs runs), with inputs rotated among enough copies of g that L2 cannot serve them, for the
same shapes and dtypes as psg-bench. The copy bandwidth is measured with a device-to-device
copy of a large tensor (bytes read + written). The floor of an op is the bytes psg's op must move
(g read once, or twice for clipping, plus its outputs) over that bandwidth; psg-bench uses the
same definition, so bench/combine.py can put the two side by side.

    python3 bench/torch_baseline.py --shapes 256x4M --dtypes f32 --ops mean,median --json t.json

Op names are psg-bench's (`psg-bench --list-ops`). An op PyTorch cannot run (e.g.
torch.quantile of bf16) is reported as n/a with PyTorch's reason.

Each op is timed as written (eager, along dim 0) and in its other formulations: selections also on
a transposed copy of g (the copy timed too), whose columns are contiguous; the z-score mean with
torch.std_mean; and, with --compile, torch.compile of the ops it can fuse. The op's time is the
fastest; the JSON records which (`variant`) and every formulation's time (`variants`).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable

DEFAULT_SHAPES = "64x16M,256x4M,1024x1M"
QUICK_SHAPES = "64x256K,256x64K,1024x16K"
ROTATION_BYTES = 1 << 30  # the rotation spans at least this (L2 is 50-60 MB)
MIN_COPIES, MAX_COPIES = 3, 64
MIN_RUNS = 5
SQRT_2PI = math.sqrt(2.0 * math.pi)


# ---------------------------------------------------------------- shapes (as psg-bench's cli.rs)


def parse_count(s: str) -> int:
    s = s.strip()
    shift = {"K": 10, "M": 20, "G": 30}.get(s[-1:].upper(), 0)
    digits = s[:-1] if shift else s
    if not digits.isdigit():
        raise ValueError(f"{s!r} is not a count (e.g. 4M; K, M, G are powers of two)")
    return int(digits) << shift


def fmt_count(n: int) -> str:
    for shift, suffix in ((30, "G"), (20, "M"), (10, "K")):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift}{suffix}"
    return str(n)


def parse_shape(s: str) -> tuple[int, int]:
    parts = s.lower().split("x")
    if len(parts) != 2:
        raise ValueError(f"shape {s!r} is not BxP (e.g. 256x4M)")
    b, p = parse_count(parts[0]), parse_count(parts[1])
    if b < 1 or p < 1:
        raise ValueError(f"shape {s!r}: B and P must be >= 1")
    return b, p


def shape_str(b: int, p: int) -> str:
    return f"{b}x{fmt_count(p)}"


# ---------------------------------------------------------------- the ops


@dataclass
class Params:
    clip_norm: float  # flat clip norm C = sqrt(P): clips about half the samples of the data below
    k: int  # 0-based k of kth
    b: int


@dataclass
class Op:
    name: str
    outputs: object  # an int n (n values per column) or "batch" (a tensor shaped like g)
    g_reads: int
    call: str
    run: Callable
    note: str = ""
    # Other ways to compute the same thing, (name, run): each is timed too, and the op's time is
    # the fastest. A selection along dim 0 reads every column strided by P; the transposed
    # layout pays a copy of g to read each column contiguously.
    variants: tuple = ()
    # Whether torch.compile can fuse the op (--compile times a compiled variant too).
    fusable: bool = False

    def floor_bytes(self, b: int, p: int, elem: int) -> int:
        g = b * p * elem
        out = g if self.outputs == "batch" else self.outputs * p * elem
        return self.g_reads * g + out


def _zscore_mask(g, k=3.0):
    mu, sd = g.mean(0), g.std(0)
    return (g - mu).abs() <= k * sd


def zscore_mean(g, _p):
    mask = _zscore_mask(g)
    return (g * mask).sum(0) / mask.sum(0)


def mad_mean(g, _p, k=3.0, dim=0):
    """Along `dim` (0: g as it is; 1: its transposed copy, see `_t`)."""
    med = g.median(dim, keepdim=True).values
    dev = (g - med).abs()
    mad = dev.median(dim, keepdim=True).values
    mask = (dev <= k * 1.4826 * mad) | ~(mad > 0)
    return (g * mask).sum(dim) / mask.sum(dim)


def trim_mean(g, p, alpha=0.1, dim=0):
    m = int(math.floor(alpha * p.b))
    return g.sort(dim).values.narrow(dim, m, p.b - 2 * m).mean(dim)


def _gaussian_weights(g):
    mu, sd = g.mean(0), g.std(0)
    z = (g - mu) / sd
    w = torch.exp(-0.5 * z * z) / (sd * SQRT_2PI)
    return torch.where(sd > 0, w, 1.0)  # a degenerate column weights every sample by 1


def gaussian_weighted_sum(g, _p):
    return (g * _gaussian_weights(g)).sum(0)


def gaussian_weighted(g, _p):
    w = _gaussian_weights(g)
    s = (g * w).sum(0)
    return s, s / w.sum(0)


def opacus_clip_factors(g, clip_norm):
    """Opacus' flat clipping: per-parameter norms, their norm, C / (norm + 1e-6) clamped at 1."""
    per_param = [g.reshape(len(g), -1).norm(2, dim=-1)]
    norms = torch.stack(per_param, dim=1).norm(2, dim=1)
    return (clip_norm / (norms + 1e-6)).clamp(max=1.0)


def clipped_mean(g, p):
    f = opacus_clip_factors(g, p.clip_norm).to(g.dtype)
    return torch.einsum("b,b...->...", f, g) / g.shape[0]


def clipped_median(g, p):
    f = opacus_clip_factors(g, p.clip_norm).to(g.dtype)
    return (g * f.view(-1, *([1] * (g.dim() - 1)))).median(0).values


def _t(g):
    """g as [P, B], each column's samples contiguous (the copy is part of the timed call)."""
    return g.reshape(g.shape[0], -1).t().contiguous()


def median_t(g, _p):
    return torch.quantile(_t(g), 0.5, dim=1)


def median_t_sort(g, p):
    s = _t(g).sort(1).values
    lo, hi = (p.b - 1) // 2, p.b // 2
    return (s[:, lo] + s[:, hi]) / 2


def mad_mean_t(g, p):
    return mad_mean(_t(g), p, dim=1)


def trim_mean_t(g, p):
    return trim_mean(_t(g), p, dim=1)


def clipped_median_t(g, p):
    f = opacus_clip_factors(g, p.clip_norm).to(g.dtype)
    return (_t(g) * f).median(1).values


def zscore_mean_sm(g, _p, k=3.0):
    sd, mu = torch.std_mean(g, 0)
    mask = (g - mu).abs() <= k * sd
    return (g * mask).sum(0) / mask.sum(0)


def clip_values_relative(g, _p, fraction=0.5):
    m = fraction * g.abs().amax(0)
    return torch.minimum(torch.maximum(g, -m), m)


CLIP_NOTE = "floor reads g twice; time includes the norms, factors and the aggregate (Opacus' way)"
OPS = [
    Op("sum", 1, 1, "g.sum(0)", lambda g, p: g.sum(0)),
    Op("mean", 1, 1, "g.mean(0)", lambda g, p: g.mean(0)),
    Op("var", 1, 1, "g.var(0)", lambda g, p: g.var(0), fusable=True),
    Op("std", 1, 1, "g.std(0)", lambda g, p: g.std(0), fusable=True),
    Op("sign_sum", 1, 1, "g.sign().sum(0)", lambda g, p: g.sign().sum(0), fusable=True),
    Op("median", 1, 1, "torch.quantile(g, 0.5, 0)", lambda g, p: torch.quantile(g, 0.5, dim=0),
       "the averaged median; torch.quantile takes float/double only",
       variants=(("transposed", median_t), ("transposed, sort", median_t_sort))),
    Op("median_low", 1, 1, "g.median(0).values", lambda g, p: g.median(0).values,
       variants=(("transposed", lambda g, p: _t(g).median(1).values),)),
    Op("quantile", 1, 1, "torch.quantile(g, 0.9, 0)", lambda g, p: torch.quantile(g, 0.9, dim=0),
       variants=(("transposed", lambda g, p: torch.quantile(_t(g), 0.9, dim=1)),)),
    Op("kth", 1, 1, "torch.kthvalue(g, B/4 + 1, 0)", lambda g, p: torch.kthvalue(g, p.k + 1, dim=0).values,
       variants=(("transposed", lambda g, p: torch.kthvalue(_t(g), p.k + 1, dim=1).values),)),
    Op("zscore_mean", 2, 1, "mask = |g - mu| <= 3 std; (g*mask).sum(0)/mask.sum(0)", zscore_mean,
       variants=(("std_mean", zscore_mean_sm),), fusable=True),
    Op("mad_mean", 2, 1, "MAD mask with g.median(0) (lower median)", mad_mean,
       "torch's median is the lower one; psg's MAD uses the averaged median",
       variants=(("transposed", mad_mean_t),)),
    Op("trim_mean", 2, 1, "g.sort(0) then [m:B-m].mean(0)", trim_mean,
       variants=(("transposed", trim_mean_t),)),
    Op("zscore_remove", "batch", 1, "torch.where(mask, g, 0)",
       lambda g, p: torch.where(_zscore_mask(g), g, 0.0), fusable=True),
    Op("sign", "batch", 1, "g.sign()", lambda g, p: g.sign()),
    Op("clip_values_relative", "batch", 1, "m = 0.5 |g|.amax(0); min(max(g, -m), m)",
       clip_values_relative, fusable=True),
    Op("gaussian_weighted_sum", 1, 1, "(g * N(g; mu, std)).sum(0)", gaussian_weighted_sum,
       fusable=True),
    Op("gaussian_weighted", 2, 1, "weighted sum and weighted mean", gaussian_weighted,
       fusable=True),
    Op("clipped_mean", 1, 2, "Opacus: factors, einsum('b,b...->...') / B", clipped_mean, CLIP_NOTE,
       fusable=True),
    Op("clipped_median", 1, 2, "(g * factors).median(0).values", clipped_median,
       CLIP_NOTE + "; lower median", variants=(("transposed", clipped_median_t),)),
]
OPS_BY_NAME = {op.name: op for op in OPS}


# ---------------------------------------------------------------- timing


def median(values):
    return statistics.median(values) if values else float("nan")


class Timer:
    """CUDA events on the current stream, or (with --cpu, for testing only) the host clock."""

    def __init__(self, device):
        self.cuda = device.type == "cuda"

    def time_ms(self, fn):
        if self.cuda:
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            out = fn()
            end.record()
            end.synchronize()
            ms = start.elapsed_time(end)
        else:
            t = time.perf_counter()
            out = fn()
            ms = (time.perf_counter() - t) * 1e3
        del out  # outputs are freed after the end event, outside the timed region
        return ms


def time_runs(timer, fn, warmup, runs, budget_s):
    """Warm-up runs, then `runs` timed runs of fn(i); fewer (>= MIN_RUNS) when one run is slow."""
    warm_ms = 0.0
    first = max(1, warmup)
    for i in range(first):
        warm_ms = timer.time_ms(lambda: fn(i))
    n, capped = runs, False
    if warm_ms * runs > budget_s * 1e3 and runs > MIN_RUNS:
        n, capped = max(MIN_RUNS, min(runs, int(budget_s * 1e3 / max(warm_ms, 1e-9)))), True
    times = [timer.time_ms(lambda i=i: fn(i)) for i in range(first, first + n)]
    return {
        "median_ms": median(times),
        "min_ms": min(times),
        "max_ms": max(times),
        "runs": len(times),
        "capped": capped,
    }


# ---------------------------------------------------------------- bandwidth and data


def measure_bandwidth(device, timer, nbytes, warmup, runs):
    """Device-to-device copy of `nbytes` (dst.copy_(src)): bytes read + written over the median."""
    n = nbytes // 4
    src = torch.empty(n, dtype=torch.float32, device=device).uniform_(-1.0, 1.0)
    dst = torch.empty_like(src)
    stats = time_runs(timer, lambda i: dst.copy_(src), warmup, runs, 1e9)
    if not torch.equal(src[: 1 << 18], dst[: 1 << 18]) or not torch.equal(src[-(1 << 18):], dst[-(1 << 18):]):
        raise RuntimeError("the copy's destination differs from its source")
    gbps = 2 * n * 4 / (stats["median_ms"] * 1e-3) / 1e9
    return {"buffer_bytes": n * 4, "bytes_per_run": 2 * n * 4, "gbps": gbps, "copy": stats}


def random_g(device, dtype, b, p, seed):
    """psg-bench's distribution (not its values): an Irwin-Hall sum of four uniforms, unit
    variance (within +-3.46), times a per-sample scale in [0.5, 1.5). Selections that stop
    early depend on the distribution, so both sides draw from the same one (this drew randn
    before 2026-11-29)."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    work = torch.float64 if dtype == torch.float64 else torch.float32
    g = torch.rand(b, p, device=device, dtype=work, generator=gen)
    for _ in range(3):
        g.add_(torch.rand(b, p, device=device, dtype=work, generator=gen))
    g.sub_(2.0).mul_(math.sqrt(3.0))
    scale = 0.5 + torch.rand(b, 1, device=device, dtype=work, generator=gen)
    g.mul_(scale)
    return g if g.dtype == dtype else g.to(dtype)


def rotation_copies(g_bytes):
    return max(MIN_COPIES, min(MAX_COPIES, -(-ROTATION_BYTES // max(g_bytes, 1))))


def free_bytes(device):
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()  # memory torch caches counts as used in the driver's answer
    free, _total = torch.cuda.mem_get_info(device)
    return free


# ---------------------------------------------------------------- main


DTYPES = {}  # filled once torch is imported


def err_text(e):
    text = f"{type(e).__name__}: {e}".strip()
    return text.splitlines()[0][:300] if text else type(e).__name__


def run_config(device, timer, ops, b, p, dtype_name, args, gbps, rows):
    dtype = DTYPES[dtype_name]
    elem = torch.empty((), dtype=dtype).element_size()
    g_bytes = b * p * elem
    copies = rotation_copies(g_bytes)
    free = free_bytes(device)
    # PyTorch's ops make temporaries the size of g (sort values and int64 indices, masks,
    # differences): keep room for about six g-sized tensors beyond the copies.
    reserve = 6 * g_bytes + (512 << 20)
    if free is not None:
        fit = max(0, (free - reserve) // g_bytes)
        if fit < copies:
            print(f"  note: only {fit} copies of g fit ({free / 2**30:.1f} GiB free)", file=sys.stderr)
        copies = min(copies, fit)
    shape = shape_str(b, p)

    def row(op, stats=None, error=None):
        floor_bytes = op.floor_bytes(b, p, elem)
        floor_ms = floor_bytes / (gbps * 1e9) * 1e3
        return {
            "op": op.name, "shape": shape, "b": b, "p": p, "dtype": dtype_name,
            "ms": stats["median_ms"] if stats else None, "stats": stats, "copies": copies,
            "floor_bytes": floor_bytes, "floor_ms": floor_ms,
            "x_floor": stats["median_ms"] / floor_ms if stats else None,
            "call": op.call, "note": op.note, "error": error,
        }

    if copies < 1:
        why = f"g ({g_bytes / 2**30:.2f} GiB) and PyTorch's temporaries do not fit in free memory"
        rows.extend(row(op, error=why) for op in ops)
        print(f"g[{shape}] {dtype_name}: skipped: {why}", file=sys.stderr)
        return
    print(f"g[{shape}] {dtype_name}: {g_bytes / 2**30:.2f} GiB, rotated among {copies} copies",
          file=sys.stderr)
    if args.compile:
        # A fresh compile cache for each shape and dtype: each compiles every op again, and past
        # dynamo's recompile limit (8 a function) `torch.compile` silently ran the op as written
        # (the "compiled" times from the ninth shape and dtype on were eager ones).
        torch.compiler.reset()
    gs = [random_g(device, dtype, b, p, 1234 + i) for i in range(copies)]
    params = Params(clip_norm=math.sqrt(p), k=b // 4, b=b)
    for op in ops:
        # The op as written, its other formulations, and (--compile) torch.compile of it: each
        # timed the same way; the op's time is the fastest.
        ways = [("eager", op.run), *op.variants]
        if args.compile and op.fusable:
            ways.append(("compiled", torch.compile(op.run, dynamic=False)))
        timed, errors = {}, {}
        for name, fn in ways:
            try:
                timed[name] = time_runs(timer, lambda i, fn=fn: fn(gs[i % len(gs)], params),
                                        args.warmup, args.runs, args.op_budget_s)
            except Exception as e:  # noqa: BLE001 (out of memory, n/a, a compile failure)
                errors[name] = err_text(e)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                    torch.cuda.empty_cache()
        if timed:
            best = min(timed, key=lambda n: timed[n]["median_ms"])
            r = row(op, stats=timed[best])
            r["variant"] = best
            r["variants"] = {n: t["median_ms"] for n, t in timed.items()}
            r["variant_errors"] = errors
            stats = timed[best]
            others = ", ".join(f"{n} {t['median_ms']:.3f}" for n, t in timed.items() if n != best)
            print(f"  {op.name:<22} {stats['median_ms']:>10.3f} ms {r['x_floor']:>8.2f}x floor"
                  f" ({best}, {stats['runs']} runs{', capped' if stats['capped'] else ''})"
                  f"{'; ' + others if others else ''}"
                  f"{'; failed: ' + ', '.join(errors) if errors else ''}", file=sys.stderr)
        else:
            r = row(op, error=errors.get("eager") or next(iter(errors.values())))
            r["variant_errors"] = errors
            print(f"  {op.name:<22} n/a: {r['error']}", file=sys.stderr)
        rows.append(r)
    gs.clear()  # free the copies before the next configuration
    if device.type == "cuda":
        torch.cuda.empty_cache()


def table(rows):
    lines = [f"{'op':<22} {'shape':<10} {'dtype':<5} {'torch ms':>10} {'floor ms':>10} "
             f"{'x floor':>8} {'runs':>5}"]
    for r in rows:
        if r["stats"]:
            ms = f"{r['ms']:.1f}" if r["ms"] >= 100 else f"{r['ms']:.3f}"
            x = f"{r['x_floor']:.2f}"
            runs = f"{r['stats']['runs']}{'*' if r['stats']['capped'] else ''}"
        else:
            ms, x, runs = "n/a", "-", "-"
        floor = f"{r['floor_ms']:.3f}"
        lines.append(f"{r['op']:<22} {r['shape']:<10} {r['dtype']:<5} {ms:>10} {floor:>10} "
                     f"{x:>8} {runs:>5}")
    return "\n".join(lines)


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", help=f"BxP list (default {DEFAULT_SHAPES})")
    ap.add_argument("--dtypes", default="f32,bf16", help="f32, bf16, f16, f64 (default f32,bf16)")
    ap.add_argument("--ops", help="comma-separated op names (default: all)")
    ap.add_argument("--runs", type=int, help="timed runs per op (default 20)")
    ap.add_argument("--warmup", type=int, help="untimed runs first (default 3)")
    ap.add_argument("--op-budget-s", type=float, default=60.0,
                    help="an op slower than this over --runs gets fewer runs (>= 5) (default 60)")
    ap.add_argument("--bandwidth-mib", type=int, help="copy buffer size (default 4096)")
    ap.add_argument("--json", help="write every number as JSON to this file")
    ap.add_argument("--device", type=int, default=0, help="CUDA device (default 0)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: small shapes, 5 runs, 1 warm-up, 256 MiB bandwidth buffer")
    ap.add_argument("--compile", action="store_true",
                    help="also time torch.compile of the ops it can fuse (compiled in the warm-up "
                         "runs; slow to start)")
    ap.add_argument("--eager-only", action="store_true",
                    help="time each op as written only, not its other formulations")
    ap.add_argument("--cpu", action="store_true",
                    help="run on the CPU with host timing: only to test this script without a GPU")
    args = ap.parse_args(argv)
    args.shapes = [parse_shape(s) for s in (args.shapes or (QUICK_SHAPES if args.quick else DEFAULT_SHAPES)).split(",") if s.strip()]
    args.dtypes = [d.strip().lower() for d in args.dtypes.split(",") if d.strip()]
    for d in args.dtypes:
        if d not in ("f32", "bf16", "f16", "f64"):
            ap.error(f"dtype {d!r} is not one of f32, bf16, f16, f64")
    names = [n.strip() for n in args.ops.split(",") if n.strip()] if args.ops else [o.name for o in OPS]
    for n in names:
        if n not in OPS_BY_NAME:
            ap.error(f"unknown op {n!r}; the ops are {', '.join(OPS_BY_NAME)}")
    args.ops = [OPS_BY_NAME[n] for n in names]
    if args.eager_only:
        args.ops = [Op(o.name, o.outputs, o.g_reads, o.call, o.run, o.note) for o in args.ops]
    args.runs = args.runs if args.runs is not None else (5 if args.quick else 20)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 3)
    mib = args.bandwidth_mib if args.bandwidth_mib is not None else (256 if args.quick else 4096)
    if args.runs < 1 or mib < 1 or args.op_budget_s <= 0:
        ap.error("--runs, --bandwidth-mib and --op-budget-s must be positive")
    args.bandwidth_bytes = mib << 20
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    global torch
    try:
        import torch
    except ImportError as e:
        print(f"torch_baseline: error: PyTorch is not installed ({e}); pip install torch",
              file=sys.stderr)
        return 1
    DTYPES.update(f32=torch.float32, bf16=torch.bfloat16, f16=torch.float16, f64=torch.float64)
    if args.cpu:
        device = torch.device("cpu")
        name = "CPU (--cpu: host timing, for testing only)"
    else:
        if not torch.cuda.is_available():
            print("torch_baseline: error: no CUDA GPU is visible to PyTorch "
                  f"(torch {torch.__version__}, built for CUDA {torch.version.cuda}); "
                  "nothing was measured", file=sys.stderr)
            return 1
        device = torch.device("cuda", args.device)
        torch.cuda.set_device(device)
        name = torch.cuda.get_device_name(device)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    timer = Timer(device)
    print(f"torch_baseline on {name}, torch {torch.__version__}", file=sys.stderr)
    bw = measure_bandwidth(device, timer, args.bandwidth_bytes, args.warmup, args.runs)
    print(f"copy bandwidth: {bw['gbps']:.1f} GB/s", file=sys.stderr)
    rows = []
    with torch.no_grad():
        for b, p in args.shapes:
            for d in args.dtypes:
                run_config(device, timer, args.ops, b, p, d, args, bw["gbps"], rows)
    report = {
        "tool": "torch", "torch_version": torch.__version__, "device": name,
        "quick": args.quick, "runs": args.runs, "warmup": args.warmup,
        "allow_tf32": False, "bandwidth": bw, "results": rows,
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
        print(f"wrote {args.json}", file=sys.stderr)
    print(f"\ntorch_baseline on {name}, torch {torch.__version__}")
    print(f"copy bandwidth (dst.copy_(src), {bw['buffer_bytes'] >> 20} MiB, read + written): "
          f"{bw['gbps']:.1f} GB/s")
    notes = [f"{op.name}: {op.note}" for op in args.ops if op.note]
    for r in rows:
        if r["error"]:
            notes.append(f"n/a {r['op']} g[{r['shape']}] {r['dtype']}: {r['error']}")
    if notes:
        print("notes:\n" + "\n".join(f"  * {n}" for n in notes))
    print()
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
