#!/usr/bin/env python3
"""A straightforward PyTorch GPTQ (written from the GPTQ paper, Algorithm 1) of every linear of a
GPT-2-shaped model, Hessians included, for `scripts/bench_gptq_speed.sh`: the sequential loop
(each block's Hessians from the quantized blocks before it), 4-bit per-channel asymmetric min-max
grid with an integer zero point, damping 0.01 of the mean diagonal, lazy batches of 128 columns.

Usage: bench_gptq_peer.py MODEL_DIR CALIBRATION_TEXT NSAMPLES SEQLEN
Prints one JSON line: seconds (Hessians + rounding, GPU synchronised), device.
"""
import json, sys, time
import numpy as np
import torch
import transformers


def quantize_grid(w, scale, zero, maxq):
    q = torch.clamp(torch.round(w / scale) + zero, 0, maxq)
    return scale * (q - zero)


def gptq(W, H, bits=4, blocksize=128, percdamp=0.01):
    """W [out, in] float32 on the GPU, H [in, in]; returns the quantized W."""
    W = W.clone()
    maxq = 2**bits - 1
    xmin = torch.minimum(W.min(1).values, torch.zeros(1, device=W.device))
    xmax = torch.maximum(W.max(1).values, torch.zeros(1, device=W.device))
    scale = ((xmax - xmin) / maxq).clamp(min=1e-8)
    zero = torch.round(-xmin / scale)
    scale, zero = scale[:, None], zero[:, None]
    H = H.clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    H += percdamp * torch.mean(torch.diag(H)) * torch.eye(H.shape[0], device=H.device)
    U = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    Q = torch.zeros_like(W)
    n = W.shape[1]
    for i1 in range(0, n, blocksize):
        i2 = min(i1 + blocksize, n)
        W1 = W[:, i1:i2].clone()
        E1 = torch.zeros_like(W1)
        U1 = U[i1:i2, i1:i2]
        for i in range(i2 - i1):
            w = W1[:, i]
            q = quantize_grid(w[:, None], scale, zero, maxq)[:, 0]
            Q[:, i1 + i] = q
            err = (w - q) / U1[i, i]
            W1[:, i:] -= err[:, None] * U1[i, i:][None, :]
            E1[:, i] = err
        W[:, i2:] -= E1 @ U[i1:i2, i2:]
    return Q


def main():
    model_dir, text_path, nsamples, seqlen = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    torch.backends.cuda.matmul.allow_tf32 = False
    dev = torch.device("cuda")
    tok = transformers.PreTrainedTokenizerFast(tokenizer_file=f"{model_dir}/tokenizer.json")
    ids = np.array(tok(open(text_path).read())["input_ids"])
    rng = np.random.default_rng(0)
    starts = rng.integers(0, len(ids) - seqlen, nsamples)
    windows = torch.tensor(np.stack([ids[s:s + seqlen] for s in starts]), device=dev)
    model = transformers.GPT2LMHeadModel.from_pretrained(model_dir, torch_dtype=torch.float32).to(dev).eval()
    t = model.transformer
    batch = 8
    torch.cuda.synchronize()
    start = time.time()
    with torch.no_grad():
        pos = torch.arange(seqlen, device=dev)
        states = [t.wte(windows[b:b + batch]) + t.wpe(pos) for b in range(0, nsamples, batch)]
        for block in t.h:
            layers = {"attn.c_attn": block.attn.c_attn, "attn.c_proj": block.attn.c_proj, "mlp.c_fc": block.mlp.c_fc, "mlp.c_proj": block.mlp.c_proj}
            H = {k: torch.zeros(m.weight.shape[0], m.weight.shape[0], device=dev) for k, m in layers.items()}

            def hook(name):
                def add(_m, inp, _out):
                    x = inp[0].reshape(-1, inp[0].shape[-1]).float()
                    H[name] += x.T @ x
                return add

            handles = [m.register_forward_hook(hook(k)) for k, m in layers.items()]
            for x in states:
                block(x)
            # GPT2Block returns a tuple in older transformers, the hidden states in newer ones.
            run = lambda x: (lambda out: out[0] if isinstance(out, tuple) else out)(block(x))
            for h in handles:
                h.remove()
            for k, m in layers.items():
                # Conv1D holds [in, out]; GPTQ works on [out, in].
                q = gptq(m.weight.data.T.contiguous(), H[k] * (2.0 / nsamples))
                m.weight.data = q.T.contiguous()
            states = [run(x) for x in states]
    torch.cuda.synchronize()
    print(json.dumps({"seconds": time.time() - start, "device": torch.cuda.get_device_name(), "nsamples": nsamples, "seqlen": seqlen}))


if __name__ == "__main__":
    main()
