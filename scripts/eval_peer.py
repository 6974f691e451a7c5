#!/usr/bin/env python3
"""PyTorch peer of lutlab's perplexity evaluation (issue 10): transformers' GPT2LMHeadModel, eager,
f32 and f16, on the first --tokens tokens of a text, with the same strided windows as lutlab (HF's
protocol: windows of --max-length tokens every --stride, each scoring the tokens the previous one
did not), windows of equal length batched --batch at a time. Prints one JSON object per dtype with
scored tokens/s, as `lutlab bench pipeline` counts them.

    python3 scripts/eval_peer.py --model DIR --data test.txt --tokens 32768 --max-length 1024
"""
import argparse, json, time
import torch, transformers

DEV = "cuda" if torch.cuda.is_available() else "cpu"


def sync():
    if DEV == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def windows(n, max_length, stride):
    """(begin, end, score_from) of HF's strided evaluation over n tokens."""
    out, prev_end = [], 0
    for begin in range(0, n, stride):
        end = min(begin + max_length, n)
        score_from = max(prev_end, begin + 1)
        if end > score_from:
            out.append((begin, end, score_from))
        prev_end = end
        if end == n:
            break
    return out


def evaluate(model, ids, wins, batch):
    nll, scored = 0.0, 0
    with torch.no_grad():
        groups = {}
        for w in wins:
            groups.setdefault((w[1] - w[0], w[2] - w[0]), []).append(w)
        for (length, first), group in groups.items():
            for i in range(0, len(group), batch):
                chunk = group[i:i + batch]
                x = torch.stack([ids[b:e] for b, e, _ in chunk]).to(DEV)
                logits = model(input_ids=x).logits[:, first - 1:length - 1].float()
                targets = x[:, first:length]
                loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum")
                nll += loss.item()
                scored += targets.numel()
    return nll, scored


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--tokens", type=int, default=0, help="first N tokens of the text (0: all)")
    p.add_argument("--max-length", type=int, default=1024)
    p.add_argument("--stride", type=int, default=0, help="default: max-length / 2")
    p.add_argument("--batch", type=int, default=8)
    args = p.parse_args()
    tok = transformers.AutoTokenizer.from_pretrained(args.model)
    ids = tok(open(args.data).read(), return_tensors="pt").input_ids[0]
    if args.tokens:
        ids = ids[:args.tokens]
    wins = windows(len(ids), args.max_length, args.stride or args.max_length // 2)
    for dtype in (torch.float32, torch.float16):
        model = transformers.GPT2LMHeadModel.from_pretrained(args.model, attn_implementation="eager").to(DEV).to(dtype).eval()
        evaluate(model, ids, wins[:args.batch], args.batch)  # warm-up
        sync()
        t0 = time.perf_counter()
        nll, scored = evaluate(model, ids, wins, args.batch)
        sync()
        seconds = time.perf_counter() - t0
        print(json.dumps({"engine": f"pytorch eager {str(dtype).removeprefix('torch.')}", "tokens": len(ids), "scored": scored,
                          "max_length": args.max_length, "batch": args.batch, "seconds": seconds, "tokens_per_s": scored / seconds,
                          "perplexity": float(torch.tensor(nll / scored).exp())}))
        del model
        sync()


if __name__ == "__main__":
    main()
