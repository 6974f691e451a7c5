source scripts/device_env.sh
xz -d -k -f .carry/lutlab-old.xz && chmod +x .carry/lutlab-old
M=/tmp/gpt2-124m; make_gpt2_124m $M > /dev/null 2>&1
head -c 100000 data/wikitext-2/test.txt > /tmp/test100k.txt
for b in old new; do L=.carry/lutlab; [ $b = old ] && L=.carry/lutlab-old
  LUTLAB_MATMUL=gemm $L bench model-ops --iters 50 2>&1 | grep -E "gemm.wgsl|SimpleUnit|burn's" | sed "s/^/$b /" | tee -a $OUT/ops.txt
  $L bench kernels --shapes 4096x11008,11008x4096,4096x4096,768x3072 --iters 300 --json > $OUT/kernels-$b.json 2>$OUT/kernels-$b.err
  python3 -c "
import json,sys
for l in open('$OUT/kernels-$b.json'):
  r=json.loads(l)
  if 'lut' in r.get('kernel','') or 'lut' in str(r): print('$b', {k:r[k] for k in r if k in ('kernel','shape','bits','micros','wall_micros','gbps','share_of_copy')})
" | head -30
  for mm in burn gemm; do for round in cold warm; do
    LUTLAB_FUSED=1 LUTLAB_MATMUL=$mm $L eval --model $M --data /tmp/test100k.txt --max-length 1024 --stride 1024 --json 2>/dev/null | python3 -c "import json,sys; r=json.loads(sys.stdin.readlines()[-1]); print('$b $mm $round', r['tokens_per_s'], r['perplexity'])" | tee -a $OUT/eval.txt
  done; done
done
