"""The peers of `lutlab bench kernels`, measured on the same GPU in the same run (device only):
PyTorch's GEMV of one token through a linear layer in f16 and f32 (cuBLAS), and a device copy
(the memory-bandwidth ceiling), for the same shapes. Prints one JSON object.

    python3 scripts/bench_peers.py --shapes 4096x11008,11008x4096 --iters 200
"""

import argparse
import json

import torch


def time_cuda(fn, iters):
    """Mean microseconds of `fn` over `iters` calls, after a warm-up, timed with CUDA events."""
    for _ in range(10):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) * 1000.0 / iters


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--shapes", default="768x2304,768x3072,3072x768,4096x4096,4096x11008,11008x4096")
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--copy-mib", type=int, default=256)
    args = parser.parse_args()
    results = []
    src = torch.empty(args.copy_mib << 18, dtype=torch.float32, device="cuda")
    dst = torch.empty_like(src)
    micros = time_cuda(lambda: dst.copy_(src), args.iters)
    moved = 2 * src.numel() * 4
    results.append({"kernel": "torch copy", "bytes": moved, "micros": micros, "gb_per_s": moved / micros / 1e3})
    for shape in args.shapes.split(","):
        rows, cols = (int(v) for v in shape.split("x"))
        for dtype, size in ((torch.float16, 2), (torch.float32, 4)):
            x = torch.randn(1, rows, dtype=dtype, device="cuda")
            w = torch.randn(rows, cols, dtype=dtype, device="cuda")
            y = torch.empty(1, cols, dtype=dtype, device="cuda")
            micros = time_cuda(lambda: torch.matmul(x, w, out=y), args.iters)
            moved = (rows * cols + rows + cols) * size
            name = "torch f16 gemv" if dtype == torch.float16 else "torch f32 gemv"
            results.append({"kernel": name, "rows": rows, "cols": cols, "bytes": moved, "micros": micros, "gb_per_s": moved / micros / 1e3})
    print(json.dumps({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "iters": args.iters, "kernels": results}))


if __name__ == "__main__":
    main()
