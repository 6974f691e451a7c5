#!/usr/bin/env python3
"""PyTorch peer of `lutlab fisher` (issue 5/10): per-sample squared gradients of the linear
weights of every block, accumulated on the GPU, on random windows of a token file; prints
tokens/s and the peak of torch's CUDA allocator as JSON. Eager f32, batch 1, as SqueezeLLM's
gradient script.

    python3 scripts/fisher_peer.py --model DIR --data tokens.txt [--nsamples 8] [--seqlen 1024]
"""
import argparse, json, time
import torch, transformers


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True, help="a text file, tokenized with the model's tokenizer")
    p.add_argument("--nsamples", type=int, default=8)
    p.add_argument("--seqlen", type=int, default=1024)
    args = p.parse_args()
    tok = transformers.AutoTokenizer.from_pretrained(args.model)
    ids = tok(open(args.data).read(), return_tensors="pt").input_ids[0]
    model = transformers.GPT2LMHeadModel.from_pretrained(args.model).cuda().float()
    linears = [m.weight for name, m in model.named_modules() if name.endswith(("c_attn", "c_proj", "c_fc"))]
    for param in model.parameters():
        param.requires_grad_(False)
    for w in linears:
        w.requires_grad_(True)
    acc = [torch.zeros_like(w) for w in linears]
    g = torch.Generator().manual_seed(0)
    starts = torch.randint(0, len(ids) - args.seqlen + 1, (args.nsamples + 1,), generator=g).tolist()

    def sample(start):
        x = ids[start:start + args.seqlen].unsqueeze(0).cuda()
        loss = model(input_ids=x, labels=x).loss
        grads = torch.autograd.grad(loss, linears)
        for a, gr in zip(acc, grads):
            a.add_(gr.square())

    sample(starts[0])  # warm-up
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for s in starts[1:]:
        sample(s)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    print(json.dumps({
        "engine": "pytorch eager f32", "nsamples": args.nsamples, "seqlen": args.seqlen,
        "seconds": seconds, "tokens_per_s": args.nsamples * args.seqlen / seconds,
        "peak_allocated_bytes": torch.cuda.max_memory_allocated(),
    }))


if __name__ == "__main__":
    main()
