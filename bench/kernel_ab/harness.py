"""Times hand-edited variants of psg's generated bf16 tiled kernels beside the generated ones, on
one GPU: NVRTC and the driver through ctypes (the options psg's JIT uses), torch for memory and
CUDA events, the launch psg makes (persistent grid of resident blocks, 32 x 8 threads).

    cargo run --example dump_kernels -- DIR        # the generated sources, DIR/<kernel>.cu
    python3 bench/kernel_ab/two_slabs_canonical.py DIR/zscore_mean_bf16_tile.cu DIR/zscore_mean_v5.cu zscore_mean_v5 1
    DIR=DIR VARS=base,v5 DOUBLE_PARTIALS=v5 SHAPES=256x4194304 LOG2S=6,7 RUNS=30 python3 bench/kernel_ab/harness.py out.json

For each op in KERNELS, shape, tile width (log2, LOG2S) and variant: the median of RUNS - 3
event-timed launches after one untimed, the inputs rotated among 3 copies of g (bf16, normal),
the time over the floor (g's bytes at the copy bandwidth measured first), and how many outputs
differ from the generated kernel's at the first tile width. Variants run only at tile widths of
128 columns (log2 7) and more; "base" is DIR/<op>_bf16_tile.cu, variant v DIR/<op>_v.cu with
kernel <op>_v.
"""
import ctypes, json, sys, glob, os, statistics, torch
here = os.environ["DIR"]
cuda = ctypes.CDLL("libcuda.so.1"); nvrtc = ctypes.CDLL("libnvrtc.so.13")
def ck(r, what):
    if r != 0: raise RuntimeError(f"{what}: {r}")
torch.cuda.init(); torch.zeros(1, device="cuda")
major, minor = torch.cuda.get_device_capability()
arch = f"sm_{major}{minor}"
def compile_(path):
    src = open(path).read().encode()
    prog = ctypes.c_void_p()
    ck(nvrtc.nvrtcCreateProgram(ctypes.byref(prog), src, b"k.cu", 0, None, None), "create")
    opts = [f"--gpu-architecture={arch}".encode(), b"--fmad=false", b"--std=c++17"]
    arr = (ctypes.c_char_p * len(opts))(*opts)
    r = nvrtc.nvrtcCompileProgram(prog, len(opts), arr)
    n = ctypes.c_size_t(); nvrtc.nvrtcGetProgramLogSize(prog, ctypes.byref(n))
    log = ctypes.create_string_buffer(n.value); nvrtc.nvrtcGetProgramLog(prog, log)
    if r != 0: raise RuntimeError(log.value.decode())
    nvrtc.nvrtcGetCUBINSize(prog, ctypes.byref(n)); buf = ctypes.create_string_buffer(n.value)
    nvrtc.nvrtcGetCUBIN(prog, buf)
    mod = ctypes.c_void_p(); ck(cuda.cuModuleLoadData(ctypes.byref(mod), buf), "load")
    return mod
def func(mod, name):
    f = ctypes.c_void_p(); ck(cuda.cuModuleGetFunction(ctypes.byref(f), mod, name.encode()), name)
    return f
sms = torch.cuda.get_device_properties(0).multi_processor_count
def launch(f, args, n_p, log2, smem):
    ck(cuda.cuFuncSetAttribute(f, 8, smem), "attr")
    nb = ctypes.c_int(); ck(cuda.cuOccupancyMaxActiveBlocksPerMultiprocessor(ctypes.byref(nb), f, 256, ctypes.c_size_t(smem)), "occ")
    blocks = min((n_p + (1 << log2) - 1) >> log2, nb.value * sms)
    ptrs = (ctypes.c_void_p * len(args))(*[ctypes.cast(ctypes.byref(a), ctypes.c_void_p) for a in args])
    stream = ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)
    ck(cuda.cuLaunchKernel(f, blocks, 1, 1, 32, 8, 1, smem, stream, ptrs, None), "launch")
    return nb.value
def bandwidth():
    a = torch.empty(1 << 30, dtype=torch.uint8, device="cuda"); b = torch.empty_like(a)
    ts = []
    for i in range(12):
        s, e = torch.cuda.Event(True), torch.cuda.Event(True)
        s.record(); b.copy_(a); e.record(); e.synchronize(); ts.append(s.elapsed_time(e))
    return 2 * a.numel() / (statistics.median(ts[2:]) * 1e-3)
bw = bandwidth()
res = {"device": torch.cuda.get_device_name(0), "bw": bw, "rows": []}
print(f"{res['device']} copy bandwidth {bw/1e9:.0f} GB/s", flush=True)
KERNELS = [  # name, outputs, scalar s0 or None
    ("zscore_mean", 2, 3.0), ("gaussian_weighted_sum", 1, None), ("var_corrected", 1, 1.0)]
SHAPES = [tuple(int(x) for x in v.split("x")) for v in os.environ.get("SHAPES", "256x4194304").split(",")]
VARS = os.environ.get("VARS", "base").split(",")
LOG2S = [int(x) for x in os.environ.get("LOG2S", "6,7").split(",")]
FIXED = 8192  # the partials of zscore_mean, gaussian_weighted_sum, var_corrected (2 halves x 2 slots, as tile_smem)
for B, P in SHAPES:
    copies = [torch.randn(B, P, device="cuda", dtype=torch.bfloat16) for _ in range(3)]
    floor = B * P * 2 / bw
    for name, nout, s0 in KERNELS:
        mods = {v: compile_(os.path.join(here, f"{name}_bf16_tile.cu" if v == "base" else f"{name}_{v}.cu")) for v in VARS}
        fns = {v: func(mods[v], f"{name}_bf16_tile" if v == "base" else f"{name}_{v}") for v in VARS}
        results = {}
        for log2 in LOG2S:
            for v in VARS:
                if v != "base" and log2 < 7: continue
                # DOUBLE_PARTIALS: variants with twice the generated kernel's partials (128 columns in flight)
                smem = B * (1 << log2) * 2 + (2 * FIXED if v in os.environ.get("DOUBLE_PARTIALS", "").split(",") else FIXED)
                if smem > 227 * 1024: continue
                outs = [torch.empty(P, device="cuda", dtype=torch.bfloat16) for _ in range(nout)]
                def args(gi):
                    a = [ctypes.c_void_p(copies[gi].data_ptr())] + [ctypes.c_void_p(o.data_ptr()) for o in outs]
                    a += [ctypes.c_longlong(B), ctypes.c_longlong(P)]
                    if s0 is not None: a.append(ctypes.c_float(s0))
                    a += [ctypes.c_int(log2), ctypes.c_int(1)]
                    return a
                nb = launch(fns[v], args(0), P, log2, smem); torch.cuda.synchronize()
                results[(log2, v)] = [o.clone() for o in outs]
                ts = []
                for i in range(int(os.environ.get("RUNS", "24"))):
                    a = args(i % len(copies))
                    s, e = torch.cuda.Event(True), torch.cuda.Event(True)
                    s.record(); launch(fns[v], a, P, log2, smem); e.record(); e.synchronize()
                    ts.append(s.elapsed_time(e))
                t = statistics.median(ts[3:]) * 1e-3
                row = {"op": name, "B": B, "P": P, "log2": log2, "v": v, "ms": t * 1e3, "xF": t / floor, "blocks_per_sm": nb}
                ref = results.get((6, "base")) or results.get((log2, "base"))
                diffs = []
                for o, r in zip(results[(log2, v)], ref):
                    o, r = o.float(), r.float()
                    same = (o == r) | (o.isnan() & r.isnan())
                    rel = ((o - r).abs() / r.abs().clamp_min(1e-30))[~same]
                    diffs.append({"differ": int((~same).sum()), "max_rel": float(rel.max()) if rel.numel() else 0.0})
                row["vs_base6"] = diffs
                res["rows"].append(row)
                print(json.dumps(row), flush=True)
        del mods
    del copies; torch.cuda.empty_cache()
json.dump(res, open(sys.argv[1], "w"), indent=1)
