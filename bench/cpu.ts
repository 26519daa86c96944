/**
 * Our CPU backend side by side with PyTorch on the CPU, in one run (`deno task bench:cpu`).
 *
 *     deno run -A bench/cpu.ts [--rounds 3] [--only a,b] [--no-llvmpipe] [--small] [--out FILE]
 *       [--threads 1,2] [--repeats N] [--python PATH]
 *
 * Every round runs each configuration once, as its own subprocess, one after another (interleaved, so that a
 * noisy neighbour hits all of them alike): ours on the CPU backend at each thread count (`bench/cpu_work.ts`,
 * `OPENBLAS_NUM_THREADS`), ours on WebGPU (llvmpipe on a machine without a GPU; `RLHF_WEBGPU_BACKEND` unset), and
 * PyTorch at each thread count (`bench/torch_cpu.py`, `torch.set_num_threads` plus the OpenMP/OpenBLAS variables).
 * Each workload's figure is its minimum over the rounds (each round's figure being the minimum of that process's
 * repeats). Prints a markdown table (workloads × configurations, plus ours CPU / PyTorch at each thread count; the
 * target is ≤ 2×) and writes the JSON report to `--out` (default `bench/results/cpu-<date>.json`).
 *
 * PyTorch: the newest torch among `--python`, else `/usr/bin/python3` (Debian's `python3-torch`) and the
 * `python3` on PATH; when none imports torch, its columns say "not installed" and the rest still runs.
 * @module
 */

import { gitCommit, now, type Result, sig } from "./lib.ts";
import { WORKLOADS } from "./cpu_work.ts";

/** One configuration of the comparison: who runs, on what, with how many threads. */
export interface CpuConfig {
  /** Key in the JSON report, e.g. `ours_cpu_1t`. */
  key: string;
  /** Column heading. */
  label: string;
  /** Our engine or PyTorch. */
  impl: "ours" | "torch";
  /** Our backend (PyTorch: "torch"). */
  backend: "cpu" | "webgpu" | "torch";
  /** Thread count (null: the adapter's default, for llvmpipe). */
  threads: number | null;
}

/** Command-line options of `bench/cpu.ts`. */
export interface CpuBenchArgs {
  /** Rounds over all configurations. */
  rounds: number;
  /** Workloads to run (all by default). */
  only: string[];
  /** Leave out our WebGPU (llvmpipe) configuration. */
  llvmpipe: boolean;
  /** Tiny shapes (smoke test). */
  small: boolean;
  /** Where the JSON report goes (null: `bench/results/cpu-<date>.json`). */
  out: string | null;
  /** Thread counts of the CPU configurations. */
  threads: number[];
  /** Timed repeats per workload and process (null: each script's default). */
  repeats: number | null;
  /** Python with torch (null: look for one). */
  python: string | null;
}

/** Parses the command line (`--flag=value` also works); throws on unknown flags. */
export function parseCpuBenchArgs(args: readonly string[]): CpuBenchArgs {
  const r: CpuBenchArgs = {
    rounds: 3,
    only: [...WORKLOADS],
    llvmpipe: true,
    small: false,
    out: null,
    threads: [1, 2],
    repeats: null,
    python: null,
  };
  const positive = (flag: string, v: string) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) throw new Error(`${flag} must be a positive integer (got "${v}")`);
    return n;
  };
  for (let i = 0; i < args.length; i++) {
    let a = args[i], v: string | undefined;
    const eq = a.indexOf("=");
    if (a.startsWith("--") && eq > 0) [a, v] = [a.slice(0, eq), a.slice(eq + 1)];
    const value = () => {
      const x = v ?? args[++i];
      if (x === undefined) throw new Error(`${a} needs a value`);
      return x;
    };
    if (a === "--small") r.small = true;
    else if (a === "--no-llvmpipe") r.llvmpipe = false;
    else if (a === "--rounds") r.rounds = positive(a, value());
    else if (a === "--repeats") r.repeats = positive(a, value());
    else if (a === "--out") r.out = value();
    else if (a === "--python") r.python = value();
    else if (a === "--threads") r.threads = value().split(",").map((t) => positive(a, t.trim()));
    else if (a === "--only") {
      r.only = value().split(",").map((s) => s.trim()).filter((s) => s);
      const bad = r.only.filter((w) => !(WORKLOADS as readonly string[]).includes(w));
      if (bad.length) throw new Error(`unknown workload(s) ${bad.join(", ")}; known: ${WORKLOADS.join(", ")}`);
    } else {
      throw new Error(
        `unknown argument "${
          args[i]
        }" (use --rounds, --only, --no-llvmpipe, --small, --out, --threads, --repeats, --python)`,
      );
    }
  }
  return r;
}

/** The configurations in run order: ours CPU at each thread count, ours llvmpipe, PyTorch at each thread count. */
export function cpuConfigs(a: CpuBenchArgs): CpuConfig[] {
  const t = (n: number) => `${n} thread${n === 1 ? "" : "s"}`;
  return [
    ...a.threads.map((n): CpuConfig => ({
      key: `ours_cpu_${n}t`,
      label: `ours CPU ${t(n)}`,
      impl: "ours",
      backend: "cpu",
      threads: n,
    })),
    ...(a.llvmpipe
      ? [{ key: "ours_llvmpipe", label: "ours llvmpipe", impl: "ours", backend: "webgpu", threads: null } as CpuConfig]
      : []),
    ...a.threads.map((n): CpuConfig => ({
      key: `torch_${n}t`,
      label: `PyTorch ${t(n)}`,
      impl: "torch",
      backend: "torch",
      threads: n,
    })),
  ];
}

const ROOT = new URL("..", import.meta.url).pathname;
const log = (msg: string) => console.error(`cpu.ts: ${msg}`);
const text = (b: Uint8Array) => new TextDecoder().decode(b);

/** Runs a command; its stdout, stderr and success (false too when it cannot be started or is killed). */
async function exec(cmd: string[], env?: Record<string, string>, timeoutMs = 30 * 60_000) {
  try {
    const out = await new Deno.Command(cmd[0], {
      args: cmd.slice(1),
      cwd: ROOT,
      ...(env ? { env, clearEnv: true } : {}),
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(timeoutMs),
    }).output();
    return { ok: out.success, stdout: text(out.stdout), stderr: text(out.stderr) };
  } catch (e) {
    return { ok: false, stdout: "", stderr: (e as Error).message };
  }
}

/** Compares two version strings by their numeric parts ("2.3.1+cpu" > "1.13.0a0"): negative, 0 or positive. */
export function compareVersions(x: string, y: string): number {
  const parts = (v: string) => (v.match(/^\d+(\.\d+)*/)?.[0] ?? "0").split(".").map(Number);
  const [a, b] = [parts(x), parts(y)];
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    if ((a[i] ?? 0) !== (b[i] ?? 0)) return (a[i] ?? 0) - (b[i] ?? 0);
  }
  return 0;
}

/** The Python with the newest torch among the candidates, or null when none imports torch. */
export async function findTorch(python: string | null): Promise<{ python: string; version: string } | null> {
  const candidates = python ? [python] : ["/usr/bin/python3", "python3"];
  let best: { python: string; version: string } | null = null;
  for (const p of candidates) {
    const r = await exec([p, "-c", "import torch; print(torch.__version__)"], undefined, 120_000);
    const version = r.stdout.trim();
    if (r.ok && version && (!best || compareVersions(version, best.version) > 0)) best = { python: p, version };
  }
  return best;
}

/** Runs one configuration once: the script's JSON report, or `{error}` with the end of its stderr. */
async function runConfig(c: CpuConfig, a: CpuBenchArgs, python: string | null): Promise<Result> {
  const env = Deno.env.toObject();
  delete env.RLHF_WEBGPU_BACKEND;
  if (c.threads !== null) {
    for (const k of ["OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"]) env[k] = String(c.threads);
  }
  const common = [
    "--only",
    a.only.join(","),
    ...(c.threads !== null ? ["--threads", String(c.threads)] : []),
    ...(a.repeats !== null ? ["--repeats", String(a.repeats)] : []),
    ...(a.small ? ["--small"] : []),
  ];
  if (c.impl === "torch" && !python) return { error: "not installed" };
  const cmd = c.impl === "torch"
    ? [python!, "bench/torch_cpu.py", ...common]
    : [Deno.execPath(), "run", "-A", "bench/cpu_work.ts", "--backend", c.backend, ...common];
  const r = await exec(cmd, env);
  const line = r.stdout.trim().split("\n").at(-1) ?? "";
  if (r.ok) {
    try {
      return JSON.parse(line) as Result;
    } catch { /* reported below */ }
  }
  const tail = r.stderr.trim().split("\n").slice(-3).join(" | ");
  return { error: `${r.ok ? "no JSON report" : "failed"}: ${tail.slice(0, 400)}` };
}

/** Per configuration and workload: the round with the smallest `ms`, with every round's figure as `rounds_ms`. */
export function bestOfRounds(rounds: Record<string, Result>[], configs: CpuConfig[], only: string[]) {
  const best: Record<string, Record<string, Result>> = {};
  for (const w of only) {
    best[w] = {};
    for (const c of configs) {
      const entries = rounds.map((r) => {
        const rep = r[c.key];
        const res = (rep?.results as Record<string, Result> | undefined)?.[w];
        return res ?? { error: (rep?.error as string | undefined) ?? "no result" };
      });
      const timed = entries.filter((e) => typeof e.ms === "number" && (e.ms as number) > 0);
      best[w][c.key] = timed.length
        ? { ...timed.reduce((x, y) => (y.ms as number) < (x.ms as number) ? y : x), rounds_ms: timed.map((e) => e.ms) }
        : entries[0];
    }
  }
  return best;
}

const PHASES: [string, string][] = [
  ["generate_ms", "↳ generate"],
  ["score_and_forward_ms", "↳ score + forward"],
  ["optimize_ms", "↳ optimise"],
];

/** The markdown table (and footnotes for errors) of the best figures. */
export function markdownTable(best: Record<string, Record<string, Result>>, configs: CpuConfig[], threads: number[]) {
  const notes: string[] = [];
  const cell = (r: Result | undefined, field: string) => {
    const v = r?.[field];
    if (typeof v === "number") return `${sig(v, 3)} ms`;
    const msg = String(r?.error ?? r?.skipped ?? "—");
    if (msg === "not installed" || msg === "—") return msg;
    let i = notes.indexOf(msg);
    if (i < 0) i = notes.push(msg) - 1;
    return `error [${i + 1}]`;
  };
  const ratio = (r: Record<string, Result>, n: number, field: string, mark: boolean) => {
    const ours = r[`ours_cpu_${n}t`]?.[field], torch = r[`torch_${n}t`]?.[field];
    if (typeof ours !== "number" || typeof torch !== "number" || !(torch > 0)) return "—";
    const x = ours / torch;
    return `${x.toFixed(2)}×${mark ? (x <= 2 ? " ✓" : " ✗") : ""}`;
  };
  const head = ["workload", ...configs.map((c) => c.label), ...threads.map((n) => `ours CPU / PyTorch, ${n}T`)];
  const lines = [`| ${head.join(" | ")} |`, `|${head.map((_, i) => i ? "---:" : "---").join("|")}|`];
  for (const [w, r] of Object.entries(best)) {
    const rows: [string, string, boolean][] = [[w, "ms", true]];
    if (w === "ppo_iteration") rows.push(...PHASES.map(([f, l]): [string, string, boolean] => [l, f, false]));
    for (const [label, field, mark] of rows) {
      const cells = [...configs.map((c) => cell(r[c.key], field)), ...threads.map((n) => ratio(r, n, field, mark))];
      lines.push(`| ${label} | ${cells.join(" | ")} |`);
    }
  }
  return [...lines, ...notes.map((m, i) => `\n[${i + 1}] ${m}`)].join("\n");
}

/** CPU model (from /proc/cpuinfo) and logical core count. */
async function machine(): Promise<Result> {
  const info = await Deno.readTextFile("/proc/cpuinfo").catch(() => "");
  const model = info.match(/^model name\s*:\s*(.+)$/m)?.[1]?.trim() ?? null;
  return { cpu_model: model, cores: navigator.hardwareConcurrency, os: `${Deno.build.os} ${Deno.build.arch}` };
}

/** Whether two shape records agree (key order ignored). */
function sameShape(x: unknown, y: unknown): boolean {
  const norm = (v: unknown): string =>
    v && typeof v === "object"
      ? `{${Object.keys(v).sort().map((k) => `${k}:${norm((v as Record<string, unknown>)[k])}`).join(",")}}`
      : JSON.stringify(v);
  return norm(x) === norm(y);
}

if (import.meta.main) {
  let a: CpuBenchArgs;
  try {
    a = parseCpuBenchArgs(Deno.args);
  } catch (e) {
    console.error(`bench/cpu.ts: ${(e as Error).message}`);
    Deno.exit(2);
  }
  const started = now(), date = new Date().toISOString();
  const torch = await findTorch(a.python);
  log(torch ? `PyTorch ${torch.version} (${torch.python})` : "PyTorch: not installed (its columns say so)");
  const configs = cpuConfigs(a);
  const rounds: Record<string, Result>[] = [];
  for (let r = 0; r < a.rounds; r++) {
    const round: Record<string, Result> = {};
    for (const c of configs) {
      const t0 = now();
      round[c.key] = await runConfig(c, a, torch?.python ?? null);
      const res = round[c.key].results as Record<string, Result> | undefined;
      const summary = res
        ? Object.entries(res).map(([w, x]) => `${w} ${x.ms ?? "error"}`).join(", ")
        : String(round[c.key].error);
      log(`round ${r + 1}/${a.rounds}, ${c.label}: ${summary} (${((now() - t0) / 1000).toFixed(1)} s)`);
    }
    rounds.push(round);
  }
  const best = bestOfRounds(rounds, configs, a.only);
  const warnings: string[] = [];
  for (const w of a.only) {
    const ours = best[w][configs[0].key]?.shape, theirs = best[w][`torch_${a.threads[0]}t`]?.shape;
    if (ours && theirs && !sameShape(ours, theirs)) warnings.push(`${w}: shapes differ between ours and PyTorch`);
  }
  const table = markdownTable(best, configs, a.threads);
  const mach = await machine();
  const llvm = rounds.map((r) => r.ours_llvmpipe?.adapter).find((x) => x);
  const header = [
    `CPU: ${mach.cpu_model ?? "unknown"}, ${mach.cores} cores; PyTorch ${torch?.version ?? "not installed"}; ` +
    `deno ${Deno.version.deno}${llvm ? `; ${llvm}` : ""}; best of ${a.rounds} round(s)${a.small ? "; --small" : ""}`,
    ...warnings.map((w) => `warning: ${w}`),
  ];
  console.log([...header, "", table].join("\n"));
  const report = {
    date,
    machine: mach,
    torch: torch ? { version: torch.version, python: torch.python } : null,
    deno: Deno.version.deno,
    commit: await gitCommit(),
    args: a,
    configs,
    total_s: sig((now() - started) / 1000, 3),
    warnings,
    results: best,
    table,
    rounds,
  };
  const out = a.out ?? `${ROOT}bench/results/cpu-${a.small ? "small-" : ""}${date.slice(0, 10)}.json`;
  await Deno.writeTextFile(out, JSON.stringify(report, null, 1) + "\n");
  log(`report written to ${out} (${report.total_s} s)`);
}
