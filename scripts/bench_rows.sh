# Sourced by the resumable benchmark scripts (bench_budget.sh, bench_inputs.sh,
# bench_allocate_per.sh) once they have set WORK: the lutlab to run ($LUTLAB, a release build
# here; else the device's carried one, see device_env.sh), the rows file $rows (one JSON line per
# finished run; a rerun skips them) and the evaluation text $eval_text (all of WikiText-2 test, or
# its first $EVAL_CHARS characters).
if [ -z "${LUTLAB:-}" ]; then
  source scripts/device_env.sh
  LUTLAB=.carry/lutlab
fi
rows=$WORK/rows.jsonl
mkdir -p "$WORK" && touch "$rows"
eval_text=data/wikitext-2/test.txt
if [ -n "${EVAL_CHARS:-}" ]; then
  eval_text=$WORK/test-head.txt
  python3 -c "import sys; sys.stdout.write(open('data/wikitext-2/test.txt').read()[:int(sys.argv[1])])" "$EVAL_CHARS" > "$eval_text"
fi
