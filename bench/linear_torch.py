"""PyTorch's FP32 einsum for a Linear layer's per-sample gradients, and for the batch gradient,
timed separately: the baseline of crates/psg-ops/examples/bench_linear.rs (same sizes, same card).

B = 64, T = 128, in = out = 1024; TF32 off. Each run is timed with torch.cuda.Event after warm-up,
and the median of the runs is printed.

    python3 bench/linear_torch.py [--runs N]
"""

import argparse
import statistics

import torch

B, T, IN, OUT = 64, 128, 1024, 1024


def time_ms(fn, runs, warmup=5):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(runs):
        fn()  # untimed: keeps the GPU busy while the timed call is enqueued (as bench_linear does)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times), min(times), max(times)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    dev = torch.device("cuda")
    gen = torch.Generator(device=dev).manual_seed(0)
    a = torch.rand(B, T, IN, device=dev, generator=gen, dtype=torch.float32) * 2 - 1
    g = torch.rand(B, T, OUT, device=dev, generator=gen, dtype=torch.float32) * 2 - 1
    flop = 2.0 * B * T * IN * OUT
    print(f"device: {torch.cuda.get_device_name(dev)}, torch {torch.__version__}, allow_tf32={torch.backends.cuda.matmul.allow_tf32}")
    cases = [
        ("per-sample einsum('bti,bto->boi')", lambda: torch.einsum("bti,bto->boi", a, g)),
        ("batch einsum('bti,bto->oi')", lambda: torch.einsum("bti,bto->oi", a, g)),
        ("both, two calls", lambda: (torch.einsum("bti,bto->boi", a, g), torch.einsum("bti,bto->oi", a, g))),
    ]
    for name, fn in cases:
        med, lo, hi = time_ms(fn, args.runs)
        print(
            f"torch {name} B={B} T={T} in={IN} out={OUT}: median {med:.4f} ms "
            f"(min {lo:.4f}, max {hi:.4f}, {args.runs} runs), {flop / (med * 1e-3) / 1e12:.1f} TFLOP/s"
        )
    # Same numbers? (per-sample summed over the batch = batch gradient)
    ps = torch.einsum("bti,bto->boi", a, g)
    bt = torch.einsum("bti,bto->oi", a, g)
    print(f"check: max |sum_b per-sample - batch| = {(ps.sum(0) - bt).abs().max().item():.3e}")


if __name__ == "__main__":
    main()
