#!/usr/bin/env python3
"""Joins psg-bench's and torch_baseline.py's JSON into one table.

    python3 bench/combine.py psg.json torch.json [--json combined.json]

Rows are matched by (op, B, P, dtype). Both ratios to the floor use one floor per row: the bytes
psg's op must move over the faster of the two measured copy bandwidths (the card's ceiling as
best measured). speed-up = torch ms / psg ms (above 1: psg is faster). Either file may be missing
(its columns are then blank), so a failed side still leaves the other's numbers.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys


def load(path):
    if not path or not os.path.exists(path):
        return None, f"{path or 'no file'}: not found"
    try:
        with open(path) as f:
            return json.load(f), None
    except (OSError, ValueError) as e:
        return None, f"{path}: unreadable ({e})"


def key(row):
    return (row["op"], int(row["b"]), int(row["p"]), row["dtype"])


def fmt_ms(v):
    if v is None:
        return "n/a"
    return f"{v:.1f}" if v >= 100 else f"{v:.3f}"


def fmt_x(v, digits=2):
    return "-" if v is None else f"{v:.{digits}f}"


def combine(psg, torch):
    """The joined rows, the floor bandwidth and header lines."""
    bws = {}
    for name, doc in (("psg", psg), ("torch", torch)):
        gbps = (doc or {}).get("bandwidth", {}).get("gbps")
        if gbps:
            bws[name] = float(gbps)
    floor_gbps = max(bws.values()) if bws else None
    psg_rows = {key(r): r for r in (psg or {}).get("results", [])}
    torch_rows = {key(r): r for r in (torch or {}).get("results", [])}
    order = list(psg_rows) + [k for k in torch_rows if k not in psg_rows]
    rows = []
    for k in order:
        p, t = psg_rows.get(k), torch_rows.get(k)
        src = p or t
        floor_bytes = src.get("floor_bytes")
        floor_ms = floor_bytes / (floor_gbps * 1e9) * 1e3 if floor_bytes and floor_gbps else None
        psg_ms = p.get("ms") if p else None
        torch_ms = t.get("ms") if t else None
        rows.append({
            "op": k[0], "shape": src.get("shape", f"{k[1]}x{k[2]}"), "b": k[1], "p": k[2],
            "dtype": k[3], "floor_bytes": floor_bytes, "floor_ms": floor_ms,
            "psg_ms": psg_ms, "torch_ms": torch_ms,
            "psg_x_floor": psg_ms / floor_ms if psg_ms and floor_ms else None,
            "torch_x_floor": torch_ms / floor_ms if torch_ms and floor_ms else None,
            "speedup": torch_ms / psg_ms if psg_ms and torch_ms else None,
            "psg_error": p.get("error") if p else "not run",
            "torch_error": t.get("error") if t else "not run",
            "psg_note": (p or {}).get("note", ""), "torch_note": (t or {}).get("note", ""),
            # Which of PyTorch's formulations was fastest (older JSONs time one: eager).
            "torch_way": (t or {}).get("variant", "eager") if torch_ms else "",
            "torch_ways": (t or {}).get("variants", {}),
        })
    header = []
    for name, doc in (("psg", psg), ("torch", torch)):
        if doc:
            header.append(f"{name}: {doc.get('device', '?')}"
                          + (f", copy {bws[name]:.1f} GB/s" if name in bws else ""))
    if psg and torch and psg.get("device", "").find(str(torch.get("device", "?"))) < 0:
        header.append("warning: the two JSONs name different devices; compare with care")
    if psg and torch:
        # The two sides should have been run alike: the same settings, and data of the same kind
        # (torch_baseline.py draws normal values; psg-bench --data can choose others).
        if psg.get("data", "normal") != "normal":
            header.append(f"warning: psg ran on --data {psg['data']}, PyTorch on normal data; "
                          "the speed-ups compare different inputs")
        for setting in ("quick", "runs", "warmup"):
            if setting in psg and setting in torch and psg[setting] != torch[setting]:
                header.append(f"warning: {setting} differs (psg {psg[setting]}, torch "
                              f"{torch[setting]})")
    if floor_gbps:
        header.append(f"floor = bytes psg's op must move / {floor_gbps:.1f} GB/s "
                      "(the faster copy measured); speed-up = torch ms / psg ms")
    jit = (psg or {}).get("jit") or {}
    if "compile_median_ms" in jit:
        rounds = jit.get("rounds")
        per = f", {rounds} rounds, a kernel's figure the median of its rounds" if rounds else ""
        worst = (f"; largest single compile {jit['compile_worst_ms']:.1f} ms "
                 f"({jit.get('compile_worst_kernel', '?')})" if "compile_worst_ms" in jit else "")
        header.append(
            f"psg JIT over {jit.get('kernels')} kernels{per}: cold compile median "
            f"{jit['compile_median_ms']:.1f} ms, max {jit['compile_max_ms']:.1f} ms{worst}; "
            f"disk-cache load median {jit['disk_median_ms']:.2f} ms, max {jit['disk_max_ms']:.2f} ms")
    return rows, floor_gbps, header


def geomean(values):
    values = [v for v in values if v and v > 0 and math.isfinite(v)]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def text(rows, header):
    lines = list(header)
    notes, failures = {}, {}
    for r in rows:
        for side in ("psg", "torch"):
            if r[f"{side}_note"]:
                notes.setdefault(f"{side} {r['op']}: {r[f'{side}_note']}", None)
            err = r[f"{side}_error"]
            if err and err != "not run":
                failures.setdefault((side, r["op"], err), []).append(f"{r['shape']} {r['dtype']}")
    for (side, op, err), where in failures.items():
        notes.setdefault(f"{side} n/a {op} ({', '.join(where)}): {err}", None)
    if notes:
        lines.append("notes:")
        lines.extend(f"  * {n}" for n in notes)
    g = geomean([r["speedup"] for r in rows])
    if g:
        n = sum(1 for r in rows if r["speedup"])
        lines.append(f"geometric-mean speed-up over {n} rows with both timings: {g:.2f}x")
        # The overall figure depends on how many ops of each kind the list holds.
        for family, ops in FAMILIES.items():
            fam = [r["speedup"] for r in rows if r["op"] in ops and r["speedup"]]
            if fam:
                lines.append(f"  {family}: {geomean(fam):.2f}x over {len(fam)} rows")
    ways = sorted({r["torch_way"] for r in rows if r["torch_way"]})
    if ways != ["eager"] and ways:
        lines.append("torch way: the fastest of PyTorch's formulations timed (eager: the op as "
                     "written along dim 0; transposed: on a contiguous copy of g.T, the copy "
                     "timed; std_mean; compiled: torch.compile)")
    lines.append("")
    lines.append(f"{'op':<22} {'shape':<9} {'dtype':<5} {'psg ms':>9} {'psg xF':>7} "
                 f"{'torch ms':>9} {'torch xF':>8} {'speed-up':>8}  torch way")
    for r in rows:
        lines.append(
            f"{r['op']:<22} {r['shape']:<9} {r['dtype']:<5} {fmt_ms(r['psg_ms']):>9} "
            f"{fmt_x(r['psg_x_floor']):>7} {fmt_ms(r['torch_ms']):>9} "
            f"{fmt_x(r['torch_x_floor']):>8} {fmt_x(r['speedup']):>8}  {r['torch_way']}")
    return "\n".join(lines)


# Kinds of op, for geometric means that do not depend on how many of each the list holds.
FAMILIES = {
    "sums and moments (sum, mean, var, std, sign sum)": {"sum", "mean", "var", "std", "sign_sum"},
    "selections (median, median_low, quantile, kth)": {"median", "median_low", "quantile", "kth"},
    "outlier removal (z-score, MAD, trimmed)": {"zscore_mean", "mad_mean", "trim_mean",
                                                "zscore_remove"},
    "density weighting": {"gaussian_weighted_sum", "gaussian_weighted"},
    "per-sample maps (sign, relative clamp)": {"sign", "clip_values_relative"},
    "clipping": {"clipped_mean", "clipped_median"},
}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("psg_json")
    ap.add_argument("torch_json")
    ap.add_argument("--json", help="write the joined rows here")
    args = ap.parse_args(argv)
    psg, psg_why = load(args.psg_json)
    torch, torch_why = load(args.torch_json)
    if psg is None and torch is None:
        print(f"combine: error: no results ({psg_why}; {torch_why})", file=sys.stderr)
        return 1
    rows, floor_gbps, header = combine(psg, torch)
    for why in (psg_why, torch_why):
        if why:
            header.append(f"missing: {why}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"floor_gbps": floor_gbps, "header": header, "rows": rows}, f, indent=1)
    print(text(rows, header))
    return 0


if __name__ == "__main__":
    sys.exit(main())
