/**
 * Smoke test of the kernel tile sweep (`deno task bench:smoke`, not part of `deno task test`; CI runs both):
 * `bench/sweep.ts --small --budget-s 40` runs as a subprocess and prints one JSON report in which every shape holds
 * candidates with numeric times (or an `error`/`skipped` note) and a best setting chosen among the correct ones.
 * No timing assertions (the adapter may be llvmpipe) and no kill tuned to a machine's speed: only a hang guard.
 */
import assert from "node:assert/strict";

const SCRIPT = new URL("./sweep.ts", import.meta.url).pathname;
const ENV = { XDG_RUNTIME_DIR: Deno.env.get("XDG_RUNTIME_DIR") ?? "/tmp" };

import { HANG_GUARD_MS } from "./lib.ts";

async function runSweep(args: string[]) {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", SCRIPT, ...args],
    env: ENV,
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const timer = setTimeout(() => child.kill("SIGKILL"), HANG_GUARD_MS);
  const res = await child.output().finally(() => clearTimeout(timer));
  const dec = new TextDecoder();
  return { code: res.code, stdout: dec.decode(res.stdout), stderr: dec.decode(res.stderr) };
}

type Obj = Record<string, unknown>;
const isNum = (v: unknown): v is number => typeof v === "number" && Number.isFinite(v);
const isMsg = (v: unknown) => typeof v === "string" && v.length > 0;

/** Checks one kernel sweep: default time, candidate rows, best = fastest correct candidate. */
function checkKernel(name: string, r: Obj): void {
  if (r.error !== undefined) {
    assert.ok(isMsg(r.error), `${name}: error must be a message`);
    return;
  }
  const def = r.default as Obj;
  assert.ok(isNum(def?.ms) && def.ms > 0, `${name}.default.ms must be a positive number, got ${def?.ms}`);
  assert.ok("setting" in def, `${name}.default.setting`);
  const rows = r.candidates as Obj[];
  assert.ok(Array.isArray(rows) && rows.length > 0, `${name}.candidates must be a non-empty array`);
  for (const c of rows) {
    const id = `${name} ${c.label}`;
    assert.ok(isMsg(c.label) && "setting" in c, `${id}: label and setting`);
    if (c.error !== undefined || c.skipped !== undefined) {
      assert.ok(isMsg(c.error ?? c.skipped), `${id}: error/skipped must be a message`);
      continue;
    }
    for (const f of ["ms", "min_ms", "iters", "repeats", "max_abs_diff", "ref_abs_max"]) {
      assert.ok(isNum(c[f]), `${id}.${f} must be a finite number, got ${c[f]}`);
    }
    assert.equal(typeof c.ok, "boolean", `${id}.ok`);
  }
  const good = rows.filter((c) => c.ok === true);
  if (good.length === 0) {
    assert.equal(r.best, null, `${name}: no correct candidate, so no best`);
    return;
  }
  const best = r.best as Obj;
  assert.ok(best && isMsg(best.label) && isNum(best.ms), `${name}.best must name a label and a time`);
  assert.ok(isNum(best.speedup_vs_default), `${name}.best.speedup_vs_default`);
  const fastest = Math.min(...good.map((c) => c.ms as number));
  assert.equal(best.ms, fastest, `${name}: best is the fastest correct candidate`);
  assert.ok(good.some((c) => c.label === best.label), `${name}: best is one of the correct candidates`);
}

Deno.test("bench/sweep.ts --small prints a complete sweep report", async () => {
  const out = await Deno.makeTempFile({ suffix: ".json" });
  try {
    const list = await runSweep(["--list"]);
    assert.equal(list.code, 0, list.stderr);
    const keys = list.stdout.trim().split("\n");
    assert.ok(keys.includes("matmul_4096") && keys.includes("attention_B16_H12_T1024_D64"), `keys: ${keys}`);

    const bad = await runSweep(["--only", "nope"]);
    assert.notEqual(bad.code, 0, "an unknown --only entry is an error");
    assert.match(bad.stderr, /unknown --only entries nope/);

    const res = await runSweep(["--small", "--budget-s", "40", "--out", out]);
    assert.equal(res.code, 0, `sweep exited with ${res.code}; stderr tail:\n${res.stderr.slice(-3000)}`);
    const report = JSON.parse(res.stdout);
    assert.deepEqual(JSON.parse(await Deno.readTextFile(out)), report, "--out holds the same report");
    assert.equal(report.small, true);
    assert.ok(isNum(report.sync_overhead_ms) && isNum(report.total_s), "sync_overhead_ms, total_s");
    assert.equal(typeof report.complete, "boolean");
    assert.ok(isNum(report.device.max_compute_workgroup_storage_size), "device limits");
    assert.match(res.stderr, /best settings \(JSON, ready to paste\):\n\{/);

    const results = report.results as Record<string, Obj>;
    assert.deepEqual(Object.keys(results), keys, "one entry per shape, in order");
    for (const [key, r] of Object.entries(results)) {
      assert.ok(isNum(r.wall_s) || r.skipped !== undefined, `${key}.wall_s`);
      if (r.skipped !== undefined || r.error !== undefined) {
        assert.ok(isMsg(r.skipped ?? r.error), `${key}: skipped/error must be a message`);
        continue;
      }
      if (key.startsWith("matmul_")) {
        assert.equal(r.op, "matmul");
        for (const f of ["M", "N", "K"]) assert.ok(isNum(r[f]), `${key}.${f}`);
        checkKernel(key, r);
        const best = r.best as Obj | null;
        if (best) assert.deepEqual(report.best_settings.matmul[key], best.setting, `${key} in best_settings`);
      } else {
        assert.equal(r.op, "attention");
        for (const f of ["B", "H", "T", "D"]) assert.ok(isNum(r[f]), `${key}.${f}`);
        for (const k of ["forward", "gradQ", "gradKV", "fwd_bwd"]) {
          assert.equal(typeof r[k], "object", `${key}.${k}`);
          checkKernel(`${key}.${k}`, r[k] as Obj);
        }
        const best = r.best as Obj;
        for (const k of ["forward", "gradQ", "gradKV"]) {
          const kb = (r[k] as Obj).best as Obj | null;
          if (kb) assert.deepEqual(best[k], kb.setting, `${key}.best.${k}`);
        }
        assert.deepEqual(report.best_settings.attention[key], best, `${key} in best_settings`);
      }
    }
    // On any adapter the tiny shapes leave time for at least the first shape's candidates.
    const first = results.matmul_4096;
    assert.ok(first.best, "matmul_4096 has a best setting");
  } finally {
    await Deno.remove(out).catch(() => {});
  }
});
