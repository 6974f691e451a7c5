source scripts/device_env.sh
xz -d -k -f .carry/lutlab-v16.xz && chmod +x .carry/lutlab-v16
M=/tmp/gpt2-124m; make_gpt2_124m $M > /dev/null 2>&1
head -c 100000 data/wikitext-2/test.txt > /tmp/test100k.txt
for b in bk8 bk16 bk8 bk16; do L=.carry/lutlab; [ $b = bk16 ] && L=.carry/lutlab-v16
  $L bench model-ops --iters 50 2>&1 | grep -E "gemm.wgsl" | sed "s/^/$b /" | tee -a $OUT/ops.txt
  for round in cold warm; do
    $L eval --model $M --data /tmp/test100k.txt --max-length 1024 --stride 1024 --json 2>/dev/null | python3 -c "import json,sys; r=json.loads(sys.stdin.readlines()[-1]); print('$b $round', r['tokens_per_s'], r['perplexity'])" | tee -a $OUT/eval.txt
  done
done
