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
