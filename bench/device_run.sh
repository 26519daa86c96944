#!/usr/bin/env bash
# Everything one GPU device call measures, in order of importance, each part under its own timeout so a hang or
# crash in one leaves the others' results, and parts skipped once TOTAL_S seconds have passed. Run from the
# project root on the GPU machine, after
# `../shared/gpu/prepare.sh bench/gpu.ts bench/coop_probe.ts bench/mixed_curve.ts tests/matmul_coop_test.ts` here:
#   OUT=/some/dir bash bench/device_run.sh
# Writes into $OUT: coop.json (adapter features, raw cooperative-matrix configurations, fp32 vs mixed products, tile
# sweep), coop_test.txt (the mixed-precision tests), bench.json (bench/gpu.ts with the default precision, profiled),
# torch_gpt2.json, torch_ppo.json, torch_matmul.json (PyTorch anchors, same machine), curve.json (GPT-2 loss curves
set -u
: "${OUT:?set OUT to the output folder}"
TOTAL_S=${TOTAL_S:-400}
export PYTHONUNBUFFERED=1
log=$OUT/log.txt
t0=$(date +%s)
PARTS=" ${PARTS:-coop tests bench torch_gpt2 torch_ppo torch_matmul curve fp32} "
step() {
  case "$PARTS" in *" $1 "*) ;; *) return 1 ;; esac
  shift
  local el=$(($(date +%s) - t0))
  if [ "$el" -gt "$TOTAL_S" ]; then echo "== skip $* (${el}s elapsed)" | tee -a "$log" >&2; return 1; fi
  echo "== $(date +%T) +${el}s $*" | tee -a "$log" >&2
}
deno_run() { timeout "$1" bash .gpu/remote.sh deno run --cached-only "${@:2}" >/dev/null 2>>"$log"; echo "exit $?" >>"$log"; }
step coop "coop probe" && deno_run 150 -A bench/coop_probe.ts --sweep --budget-s 80 --out "$OUT/coop.json"
step tests "coop tests" && { timeout 90 bash .gpu/remote.sh deno test --cached-only -A --filter mixed tests/matmul_coop_test.ts >"$OUT/coop_test.txt" 2>&1; echo "exit $?" >>"$log"; }
step bench "bench (default precision)" && deno_run 150 -A bench/gpu.ts --profile --budget-s 90 --out "$OUT/bench.json"
step torch_gpt2 "torch_gpt2" && timeout 150 python3 .gpu/anchors/torch_gpt2.py >"$OUT/torch_gpt2.json" 2>>"$log"
step torch_ppo "torch_ppo" && timeout 100 python3 .gpu/anchors/torch_ppo.py --iters 3 --out "$OUT/torch_ppo.json" >>"$log" 2>&1
step torch_matmul "torch_matmul" && timeout 120 python3 bench/torch_matmul.py >"$OUT/torch_matmul.json" 2>>"$log"
step curve "loss curves" && deno_run 150 -A bench/mixed_curve.ts --steps 200 --batch 8 --seq 256 --out "$OUT/curve.json"
step fp32 "bench (fp32)" && RLHF_MATMUL_PRECISION=fp32 deno_run 100 -A bench/gpu.ts --budget-s 60 \
  --only gpt2_train_B8_T1024,gpt2_train_B16_T64,ppo_iteration,bert_forward,gpt2_generate --out "$OUT/bench_fp32.json"
step dawn "dawn matrix probe" && deno_run 150 --no-config --no-lock -A bench/dawn_matrix_probe.ts --out "$OUT/dawn_matrix.json"
i=0
for t in '{"splitK":{"withEpilogue":true,"minK":512}}' '{"splitK":{"withEpilogue":true,"minK":512,"maxWorkgroups":528,"targetWorkgroups":1056}}' '{}'; do
  i=$((i + 1))
  step splitk "split-K with epilogue, tuning $t" && deno_run 90 -A bench/gpu.ts --budget-s 40 --tuning "$t" \
    --only bert_forward,gpt2_train_B16_T64,ppo_iteration --out "$OUT/splitk_$i.json"
done
echo "== done +$(($(date +%s) - t0))s" | tee -a "$log" >&2
exit 0
