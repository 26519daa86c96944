#!/usr/bin/env bash
# Everything one GPU device call measures, in order of importance, each part under its own timeout so a hang or
# crash in one leaves the others' results. Run from the project root on the GPU machine, after
# `../shared/gpu/prepare.sh bench/gpu.ts bench/sweep.ts` here (see bench/README.md):
#   OUT=/some/dir bash bench/device_run.sh
# Writes bench.json (Deno's built-in WebGPU, with per-kernel profiles), torch_gpt2.json, torch_ppo.json (PyTorch
# anchors, same machine), sweep.json (tile sweep), bench_dawn.json (Dawn) and log.txt into $OUT.
# SKIP_SWEEP=1 / SKIP_DAWN=1 leave those parts out; BENCH_S, SWEEP_S, DAWN_S are their time budgets in seconds.
set -u
: "${OUT:?set OUT to the output folder}"
BENCH_S=${BENCH_S:-100} SWEEP_S=${SWEEP_S:-90} DAWN_S=${DAWN_S:-45}
export PYTHONUNBUFFERED=1
log=$OUT/log.txt
step() { echo "== $(date +%T) $*" | tee -a "$log" >&2; }
deno_run() { timeout "$1" bash .gpu/remote.sh deno run --cached-only "${@:2}" >/dev/null 2>>"$log"; echo "exit $?" >>"$log"; }
step "bench (deno)"
deno_run $((BENCH_S + 60)) -A bench/gpu.ts --profile --budget-s "$BENCH_S" --out "$OUT/bench.json"
step "torch_gpt2"
timeout 150 python3 .gpu/anchors/torch_gpt2.py >"$OUT/torch_gpt2.json" 2>>"$log"
step "torch_ppo"
timeout 120 python3 .gpu/anchors/torch_ppo.py --iters 3 --out "$OUT/torch_ppo.json" >>"$log" 2>&1
[ -n "${SKIP_SWEEP:-}" ] || {
  step "sweep"
  deno_run $((SWEEP_S + 40)) -A bench/sweep.ts --budget-s "$SWEEP_S" --out "$OUT/sweep.json"
}
[ -n "${SKIP_DAWN:-}" ] && { step done; exit 0; }
step "dawn probe"
deno_run 60 --no-lock -A bench/dawn_probe.ts --backend dawn
step "bench (dawn)"
deno_run $((DAWN_S + 45)) --no-lock -A bench/gpu.ts --backend dawn --budget-s "$DAWN_S" --profile \
  --only "${DAWN_ONLY:-dispatch_overhead,matmul_4096,attention_B16_H12_T1024_D64,gpt2_train_B16_T64,gpt2_generate,ppo_iteration}" \
  --out "$OUT/bench_dawn.json"
step done
