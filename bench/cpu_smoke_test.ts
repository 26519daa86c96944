/**
 * Smoke test of the CPU comparison (`deno task bench:smoke`): `bench/cpu.ts --small --rounds 1 --no-llvmpipe` runs
 * as a subprocess; its markdown table must have a row per workload with a positive time in every "ours CPU" column,
 * and in every PyTorch column when torch is installed (else those say "not installed"); its JSON report must name
 * the machine. No timing assertions.
 */
import assert from "node:assert/strict";
import { HANG_GUARD_MS } from "./lib.ts";
import { WORKLOADS } from "./cpu_work.ts";

Deno.test("bench/cpu.ts --small prints the comparison table", async () => {
  const out = await Deno.makeTempFile({ suffix: ".json" });
  try {
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "bench/cpu.ts", "--small", "--rounds", "1", "--no-llvmpipe", "--out", out],
      cwd: new URL("..", import.meta.url).pathname,
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const timer = setTimeout(() => child.kill("SIGKILL"), HANG_GUARD_MS);
    const res = await child.output().finally(() => clearTimeout(timer));
    const stdout = new TextDecoder().decode(res.stdout), stderr = new TextDecoder().decode(res.stderr);
    assert.equal(res.code, 0, `bench/cpu.ts exited with ${res.code}; stderr tail:\n${stderr.slice(-3000)}`);

    const report = JSON.parse(await Deno.readTextFile(out));
    assert.ok(report.machine.cores > 0 && typeof report.deno === "string" && "commit" in report, "machine facts");
    const torchInstalled = report.torch !== null;

    const rows = stdout.split("\n").filter((l) => l.startsWith("| ")).map((l) =>
      l.slice(2, -2).split(" | ").map((c) => c.trim())
    );
    const head = rows.find((r) => r[0] === "workload");
    assert.ok(head, `no table header in:\n${stdout}`);
    const cols = (prefix: string) => head.flatMap((h, i) => h.startsWith(prefix) && !h.includes("/") ? [i] : []);
    const ours = cols("ours CPU "), torch = cols("PyTorch ");
    assert.deepEqual([ours.length, torch.length], [2, 2], `columns: ${head.join(", ")}`);
    assert.ok(!head.some((h) => h.includes("llvmpipe")), "--no-llvmpipe leaves out the llvmpipe column");

    for (const w of WORKLOADS) {
      const row = rows.find((r) => r[0] === w);
      assert.ok(row, `no row for ${w} in:\n${stdout}`);
      const ms = (i: number) => {
        const m = row[i].match(/^([\d.e+-]+) ms$/);
        return m ? Number(m[1]) : NaN;
      };
      for (const i of ours) assert.ok(ms(i) > 0, `${w}, ${head[i]}: "${row[i]}"\n${stdout}`);
      for (const i of torch) {
        if (torchInstalled) assert.ok(ms(i) > 0, `${w}, ${head[i]}: "${row[i]}"\n${stdout}`);
        else assert.equal(row[i], "not installed");
      }
    }
  } finally {
    await Deno.remove(out).catch(() => {});
  }
});
