"""The peers of `lutlab bench kernels`, measured on the same GPU in the same run (device only):
PyTorch's GEMV of one token through a linear layer in f16 and f32 (cuBLAS), its GEMM of
--gemm-tokens tokens (0 skips it), a device copy (the memory-bandwidth ceiling) and a 4 KiB copy
(what one launch costs), for the same shapes. Prints one JSON object.

    python3 scripts/bench_peers.py --shapes 4096x11008,11008x4096 --iters 200 --gemm-tokens 512
"""

import argparse
import json

import torch

COLD_BYTES = 256 << 20


def time_cuda(fn, iters):
    """Mean microseconds of `fn` over `iters` calls, after as many untimed (the GPU's clocks rise,
    as in `lutlab bench kernels`), timed with CUDA events."""
    for _ in range(iters):
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
    parser.add_argument("--gemm-tokens", type=int, default=0)
    args = parser.parse_args()
    results = []
    src = torch.empty(args.copy_mib << 18, dtype=torch.float32, device="cuda")
    dst = torch.empty_like(src)
    micros = time_cuda(lambda: dst.copy_(src), args.iters)
    moved = 2 * src.numel() * 4
    results.append({"kernel": "torch copy", "bytes": moved, "micros": micros, "gb_per_s": moved / micros / 1e3})
    # What one launch costs in a stream of launches: a 4 KiB copy, as lutlab's "dispatch floor".
    small_src, small_dst = src[:1024], dst[:1024]
    micros = time_cuda(lambda: small_dst.copy_(small_src), args.iters)
    results.append({"kernel": "torch dispatch floor", "bytes": 8192, "micros": micros, "gb_per_s": 8192 / micros / 1e3})
    token_counts = [1] + ([args.gemm_tokens] if args.gemm_tokens > 0 else [])
    for shape in args.shapes.split(","):
        rows, cols = (int(v) for v in shape.split("x"))
        for tokens in token_counts:
            # As lutlab's GEMM bench: fewer repetitions of the far larger work.
            iters = args.iters if tokens == 1 else max(3, -(-args.iters // 10))
            for dtype, size in ((torch.float16, 2), (torch.float32, 4)):
                x = torch.randn(tokens, rows, dtype=dtype, device="cuda")
                # As lutlab's GEMV bench: one token's calls rotate through copies of the weights
                # (at least 8, over 256 MiB together) so that they come from memory, not L2.
                copies = min(128, max(8, -(-COLD_BYTES // (rows * cols * size)))) if tokens == 1 else 1
                ws = [torch.randn(rows, cols, dtype=dtype, device="cuda") for _ in range(copies)]
                y = torch.empty(tokens, cols, dtype=dtype, device="cuda")
                calls = [0]

                def call():
                    torch.matmul(x, ws[calls[0] % copies], out=y)
                    calls[0] += 1

                micros = time_cuda(call, iters)
                moved = (rows * cols + tokens * (rows + cols)) * size
                kind = "gemv" if tokens == 1 else "gemm"
                name = f"torch {'f16' if dtype == torch.float16 else 'f32'} {kind}"
                results.append({"kernel": name, "tokens": tokens, "rows": rows, "cols": cols, "bytes": moved, "micros": micros,
                                "gb_per_s": moved / micros / 1e3, "tflops": 2 * tokens * rows * cols / micros / 1e6,
                                "rotated_layers": copies})
                del ws
    print(json.dumps({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "iters": args.iters, "kernels": results}))


if __name__ == "__main__":
    main()
