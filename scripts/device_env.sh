# Sourced by the device scripts (bench_*.sh): the device has no Rust, so a release `lutlab` built
# here travels xz-compressed in .carry/, and Vulkan's loader as Debian packages in .gl/ (see the
# device README). Unpacks both, points Vulkan at the NVIDIA driver and makes $OUT.
#
# Here:   cargo build --release --workspace && mkdir -p .carry &&
#         strip -o .carry/lutlab $CARGO_TARGET_DIR/release/lutlab && xz -f .carry/lutlab
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
xz -d -k -f .carry/lutlab.xz && chmod +x .carry/lutlab
OUT=${OUT:-/tmp/lutlab-bench}
mkdir -p "$OUT"

# A GPT-2 124M-shaped model with random weights (the real checkpoint is not reachable from the
# device), with the shipped model's tokenizer, in directory $1.
make_gpt2_124m() {
  mkdir -p "$1"
  python3 - "$1" <<'PY'
import sys, torch, transformers
torch.manual_seed(0)
transformers.GPT2LMHeadModel(transformers.GPT2Config()).save_pretrained(sys.argv[1], safe_serialization=True)
PY
  cp models/gpt2-tiny-wikitext/{tokenizer.json,vocab.json,merges.txt} "$1/"
}
