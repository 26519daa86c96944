/**
 * Smoke test of the GPU benchmark script (`deno task bench:smoke`, not part of `deno task test`; CI runs both):
 * `bench/gpu.ts --small` runs as a subprocess and prints one JSON report with every benchmark, each holding
 * numbers or an `error`/`skipped` note. No timing assertions and no kill tuned to a machine's speed: the run's
 * own `--budget-s` turns what does not fit into `skipped` entries, and only a hang guard (20 minutes) stops it.
 */
import assert from "node:assert/strict";
import { HANG_GUARD_MS } from "./lib.ts";

/** Every key of `results`, with the numeric fields each must carry when it did not fail. */
const EXPECTED: Record<string, string[]> = {
  dispatch_overhead: [
    "record_us_per_dispatch",
    "op_us_per_dispatch",
    "batch_us_per_dispatch",
    "submit_readback_1_dispatch_ms",
    "submit_readback_1000_dispatches_ms",
    "sync_ms",
  ],
  matmul_1024: ["M", "N", "K", "ms", "tflops"],
  matmul_2048: ["M", "N", "K", "ms", "tflops"],
  matmul_4096: ["M", "N", "K", "ms", "tflops"],
  matmul_gpt2_qkv_M8192: ["M", "N", "K", "ms", "tflops"],
  matmul_gpt2_fc_M8192: ["M", "N", "K", "ms", "tflops"],
  matmul_gpt2_lmhead_M8192: ["M", "N", "K", "ms", "tflops"],
  matmul_gpt2_qkv_M1024: ["M", "N", "K", "ms", "tflops"],
  matmul_gpt2_fc_M1024: ["M", "N", "K", "ms", "tflops"],
  matmul_gpt2_lmhead_M1024: ["M", "N", "K", "ms", "tflops"],
  softmax_12288x64: ["rows", "cols", "ms", "gbps"],
  softmax_8192x768: ["rows", "cols", "ms", "gbps"],
  layernorm_12288x64: ["rows", "cols", "ms", "gbps"],
  layernorm_8192x768: ["rows", "cols", "ms", "gbps"],
  attention_B16_H12_T64_D64: ["B", "H", "T", "D", "fwd_ms", "fwd_bwd_ms"],
  attention_B16_H12_T1024_D64: ["B", "H", "T", "D", "fwd_ms", "fwd_bwd_ms"],
  bert_forward: ["batch", "seq", "ms"],
  gpt2_train_B16_T64: ["B", "T", "step_ms", "tokens_per_s", "dispatches_per_step", "loss"],
  gpt2_train_B8_T1024: ["B", "T", "step_ms", "tokens_per_s", "dispatches_per_step", "loss"],
  gpt2_generate: ["prompts", "new_tokens", "ms", "ms_per_token", "dispatches"],
  ppo_iteration: ["total_ms", "generate_ms", "score_ms", "optimize_ms"],
};

Deno.test("bench/gpu.ts --small prints a complete JSON report", async () => {
  const out = await Deno.makeTempFile({ suffix: ".json" });
  try {
    const bench = new URL("./gpu.ts", import.meta.url).pathname;
    const env: Record<string, string> = { XDG_RUNTIME_DIR: Deno.env.get("XDG_RUNTIME_DIR") ?? "/tmp" };
    const child = new Deno.Command(Deno.execPath(), {
      // No per-benchmark hard timeout: on a slow adapter (wgpu's GL backend) one benchmark may take minutes to
      // compile its kernels; the whole-run budget still skips what comes after, and the hang guard stops a hang.
      args: ["run", "-A", bench, "--small", "--profile", "--hard-timeout-s", "0", "--out", out],
      env,
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const timer = setTimeout(() => child.kill("SIGKILL"), HANG_GUARD_MS);
    const res = await child.output().finally(() => clearTimeout(timer));
    const stdout = new TextDecoder().decode(res.stdout);
    const stderr = new TextDecoder().decode(res.stderr);
    assert.equal(res.code, 0, `bench exited with ${res.code}; stderr tail:\n${stderr.slice(-3000)}`);

    const report = JSON.parse(stdout);
    assert.equal(typeof report.date, "string");
    assert.ok(!Number.isNaN(Date.parse(report.date)), "date is ISO");
    assert.equal(typeof report.deno, "string");
    assert.ok(report.backend === "deno" || report.backend === "dawn", `backend ${report.backend}`);
    assert.ok(["vulkan", "metal", "dx12", "gl", "auto"].includes(report.graphics_api), `api ${report.graphics_api}`);
    assert.equal(typeof report.adapter, "string");
    assert.ok(report.commit === null || typeof report.commit === "string", "commit is a string or null");
    assert.equal(report.small, true);
    assert.equal(typeof report.sync_overhead_ms, "number");
    assert.deepEqual(JSON.parse(await Deno.readTextFile(out)), report, "--out holds the same report");

    const results = report.results as Record<string, Record<string, unknown>>;
    assert.deepEqual(Object.keys(results).sort(), Object.keys(EXPECTED).sort(), "benchmark keys");
    for (const [name, fields] of Object.entries(EXPECTED)) {
      const r = results[name];
      assert.equal(typeof r, "object", `${name} is an object`);
      assert.equal(r.error, undefined, `${name} failed: ${r.error}`);
      if (r.skipped !== undefined) { // by the benchmark itself, or by the run once its budget was spent (no wall_s)
        assert.ok(typeof r.skipped === "string" && r.skipped.length > 0, `${name}: skipped must be a message`);
        continue;
      }
      assert.equal(typeof r.wall_s, "number", `${name}.wall_s`);
      for (const f of [...fields, "peak_bytes", "pool_bytes"]) {
        const v = r[f];
        assert.ok(typeof v === "number" && Number.isFinite(v), `${name}.${f} must be a finite number, got ${v}`);
      }
    }
    // --profile: the model benchmarks carry per-kernel GPU times (llvmpipe has timestamp queries).
    if (report.device.has_timestamps) {
      for (const name of ["gpt2_train_B16_T64", "gpt2_generate", "bert_forward", "ppo_iteration"]) {
        if (results[name].skipped !== undefined) continue;
        const p = results[name].profile as { kernel_ms: number; dispatches: number; kernels: unknown[][] };
        assert.ok(p && p.kernel_ms > 0 && p.dispatches > 0, `${name}.profile: ${JSON.stringify(p)}`);
        assert.ok(p.kernels.length > 0 && p.kernels.every((k) => typeof k[0] === "string" && Number(k[2]) >= 0));
        const sum = p.kernels.reduce((a, k) => a + Number(k[1]), 0);
        assert.ok(sum <= p.dispatches, `${name}: listed kernels hold ${sum} of ${p.dispatches} dispatches`);
      }
    }
  } finally {
    await Deno.remove(out).catch(() => {});
  }
});
