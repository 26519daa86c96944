#!/usr/bin/env bash
# Everything one GPU device call measures, in order of importance, each part under its own timeout so a hang or
# crash in one leaves the others' results, and parts skipped once TOTAL_S seconds have passed. Run from the project
# root on the GPU machine, after `../shared/gpu/prepare.sh ENTRY.ts…` here (see bench/README.md for the entries):
#   OUT=/some/dir [PARTS="…"] [TOTAL_S=400] bash bench/device_run.sh
# Parts (PARTS, default "coop tests bench torch_gpt2 torch_ppo torch_matmul curve fp32"), each writing into $OUT:
#   coop          bench/coop_probe.ts --sweep → coop.json (adapter features, cooperative-matrix configurations, fp32 vs
#                 mixed products, mixed tile sweep)
#   tests         the GPU tests of tests/matmul_coop_test.ts → coop_test.txt
#   bench         bench/gpu.ts --profile (default precision) → bench.json
#   torch_gpt2, torch_ppo, torch_matmul   the PyTorch anchors (same machine) → torch_*.json
#   curve         bench/mixed_curve.ts: GPT-2 loss curves fp32 vs mixed → curve.json
#   fp32          the model benchmarks with fp32 products → bench_fp32.json
#   dawn          bench/dawn_matrix_probe.ts (Dawn's subgroup matrices; needs npm:webgpu@0.6.2 among the entries; runs
#                 with --no-config, so deno.json's packages need not travel) → dawn_matrix.json
#   splitk        bench/gpu.ts on BERT, GPT-2 B16×T64 and PPO under several split-K tunings → splitk_<i>.json
#   sweep         bench/sweep.ts (fp32 tiles, matrix–vector and split-K candidates) → sweep.json
#   dawn_bench    bench/dawn_probe.ts, then bench/gpu.ts --backend dawn on a subset (needs npm:webgpu@0.6.2 and
#                 deno.json's packages in the cache) → bench_dawn.json
# log.txt holds every part's stderr.
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
step sweep "sweep" && deno_run 130 -A bench/sweep.ts --budget-s 90 --out "$OUT/sweep.json"
step dawn_bench "dawn probe" && deno_run 60 --no-config --no-lock -A bench/dawn_probe.ts --backend dawn
step dawn_bench "bench (dawn)" && deno_run 90 --no-lock -A bench/gpu.ts --backend dawn --budget-s 45 \
  --profile --only dispatch_overhead,matmul_4096,gpt2_train_B16_T64,gpt2_generate,ppo_iteration --out "$OUT/bench_dawn.json"
echo "== done +$(($(date +%s) - t0))s" | tee -a "$log" >&2
exit 0
