"""Interop check (issue 7): a packed model exported with `lutlab export --dequantized` loads in
HF transformers and gives the perplexity lutlab gives it (WikiText-2 test, window 256, stride
128, the protocol of make_reference_fixtures.py). Prints one JSON object.

    python3 scripts/check_export_hf.py --model /tmp/q4dense --lutlab-json eval_packed.json
"""

import argparse
import json
import sys
from pathlib import Path

import torch
from tokenizers import Tokenizer

sys.path.insert(0, str(Path(__file__).parent))
from make_reference_fixtures import disable_tf32, encode_file, load_model, strided_nll  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--lutlab-json", required=True, help="`lutlab eval --packed ... --json` of the same model")
    args = parser.parse_args()
    disable_tf32()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_model(args.model, dev)
    ids = encode_file(Tokenizer.from_file(str(Path(args.model) / "tokenizer.json")), "data/wikitext-2/test.txt")
    hf = strided_nll(model, ids, dev=dev)
    ours = json.load(open(args.lutlab_json))
    print(json.dumps({"transformers": hf["perplexity"], "lutlab_packed": ours["perplexity"],
                      "relative": abs(hf["perplexity"] / ours["perplexity"] - 1.0)}))


if __name__ == "__main__":
    main()
