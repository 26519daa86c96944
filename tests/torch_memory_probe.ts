/**
 * Memory probes for the checkpoint-loading tests, and the small hostile checkpoints they load.
 *
 * Peak memory is read on Linux from `/proc/<pid>/status` (`VmHWM`, the resident high-water mark), after resetting
 * it through `/proc/self/clear_refs`. Run as a script, this module is the child process of {@link probe}: it loads
 * one checkpoint and prints, as one JSON line, what happened and how far its resident memory rose above what it was
 * just before reading the file:
 *
 *     deno run -A --v8-flags=--expose-gc tests/torch_memory_probe.ts <file> [options JSON] [loader module URL]
 * @module
 */

import { crc32 } from "../formats/zip.ts";
import { deflateZeros, torchCheckpointBytes, type TorchWriterState } from "./torch_writer.ts";

const MiB = 2 ** 20;

/** Resident memory now and its high-water mark, in bytes. */
export interface MemoryStatus {
  /** `VmRSS`. */
  rss: number;
  /** `VmHWM`. */
  hwm: number;
}

/** `VmRSS` and `VmHWM` of process `pid` (default this one), or null where `/proc` does not have them. */
export function memoryStatus(pid: number | "self" = "self"): MemoryStatus | null {
  try {
    const text = Deno.readTextFileSync(`/proc/${pid}/status`);
    const kb = (key: string) => Number(new RegExp(`^${key}:\\s*(\\d+) kB`, "m").exec(text)?.[1] ?? NaN) * 1024;
    const s = { rss: kb("VmRSS"), hwm: kb("VmHWM") };
    return Number.isFinite(s.rss) && Number.isFinite(s.hwm) ? s : null;
  } catch {
    return null;
  }
}

/** Resets this process's `VmHWM` to its current resident size; false where the kernel does not allow it. */
export function resetPeak(): boolean {
  try {
    Deno.writeTextFileSync("/proc/self/clear_refs", "5");
    return memoryStatus() !== null;
  } catch {
    return false;
  }
}

/** Whether peak memory can be measured here (Linux with a writable `/proc/self/clear_refs`). */
export const canMeasure: boolean = resetPeak();

/** What the child process saw. */
export interface ProbeResult {
  /** Whether the checkpoint loaded. */
  ok: boolean;
  /** The error message when it did not. */
  error?: string;
  /** Whether the watchdog killed the child for passing `capBytes` (then `growth` is unknown: NaN). */
  killed: boolean;
  /** Rise of the resident high-water mark over the resident size just before reading the file, in bytes. */
  growth: number;
  /** Largest resident size the watchdog saw, in bytes. */
  maxRss: number;
  /** Bytes of the distinct tensor data arrays returned. */
  tensorBytes?: number;
  /** Bytes of the distinct buffers behind them (what the result keeps alive). */
  bufferBytes?: number;
  /** Number of tensors returned. */
  tensors?: number;
  /** Load time in milliseconds. */
  ms: number;
}

/** Options of {@link probe}. */
export interface ProbeOptions {
  /** Expected shapes by tensor name (names not listed are unknown to the model). */
  expected?: Record<string, number[]>;
  /** `maxBytes` for the loader. */
  maxBytes?: number;
  /** Resident size at which the watchdog kills the child (default 3 GiB). */
  capBytes?: number;
  /** URL of the loader module to import (default `../formats/torch_checkpoint.ts`). */
  module?: string;
}

/** Loads checkpoint `file` in a child process under a memory watchdog and returns what happened. */
export async function probe(file: string, options: ProbeOptions = {}): Promise<ProbeResult> {
  const { capBytes = 3 * 1024 * MiB, module, ...loader } = options;
  const args = ["run", "-A", "--v8-flags=--expose-gc", new URL(import.meta.url).pathname, file, JSON.stringify(loader)];
  if (module) args.push(module);
  const child = new Deno.Command(Deno.execPath(), { args, stdout: "piped", stderr: "piped" }).spawn();
  let maxRss = 0, killed = false, running = true;
  const watchdog = (async () => {
    while (running) {
      const s = memoryStatus(child.pid);
      if (s) maxRss = Math.max(maxRss, s.rss);
      if (s && s.rss > capBytes) {
        killed = true;
        child.kill("SIGKILL");
        return;
      }
      await new Promise((r) => setTimeout(r, 5));
    }
  })();
  const out = await child.output();
  running = false;
  await watchdog;
  const stdout = new TextDecoder().decode(out.stdout).trim().split("\n").at(-1) ?? "";
  if (killed) return { ok: false, killed, growth: NaN, maxRss, ms: NaN, error: "killed by the memory watchdog" };
  if (!out.success || !stdout.startsWith("{")) {
    throw new Error(`probe of ${file} failed (${out.code}): ${new TextDecoder().decode(out.stderr).slice(-2000)}`);
  }
  return { ...JSON.parse(stdout), killed, maxRss };
}

async function childMain(file: string, optionsJson = "{}", module = "../formats/torch_checkpoint.ts") {
  const { parseTorchCheckpoint, readTorchCheckpoint } = await import(module);
  const o = JSON.parse(optionsJson) as { expected?: Record<string, number[]>; maxBytes?: number };
  const expected = o.expected && new Map(Object.entries(o.expected));
  const options = { maxBytes: o.maxBytes, expectedShape: expected && ((n: string) => expected.get(n)) };
  // Warm up the loader's code paths on a tiny checkpoint, then start measuring from a collected heap.
  await parseTorchCheckpoint(torchCheckpointBytes({ w: { shape: [2], data: new Float32Array(2) } }), "warm.bin");
  (globalThis as { gc?: () => void }).gc?.();
  resetPeak();
  const before = memoryStatus()!.rss;
  const t0 = performance.now();
  let result: Record<string, unknown>;
  try {
    const m: Map<string, { data: Float32Array | Int32Array }> = await readTorchCheckpoint(file, options);
    const arrays = new Set([...m.values()].map((t) => t.data));
    const buffers = new Set([...arrays].map((a) => a.buffer));
    result = {
      ok: true,
      tensors: m.size,
      tensorBytes: [...arrays].reduce((a, d) => a + d.byteLength, 0),
      bufferBytes: [...buffers].reduce((a, b) => a + b.byteLength, 0),
    };
  } catch (e) {
    result = { ok: false, error: e instanceof Error ? e.message : String(e) };
  }
  const ms = performance.now() - t0;
  console.log(JSON.stringify({ ...result, growth: memoryStatus()!.hwm - before, ms }));
}

if (import.meta.main) await childMain(Deno.args[0], Deno.args[1], Deno.args[2]);

// ---------- hostile and normal checkpoints ----------

/** `count` tensors of size `[side, side]` with stride (0, 0) over one one-element storage (~13 KB for 100). */
export function strideBomb(count = 100, side = 4096): Uint8Array {
  const state: TorchWriterState = new Map([["base", { shape: [1], data: new Float32Array([1]) }]]);
  for (let i = 0; i < count; i++) state.set(`w${i}`, { viewOf: "base", shape: [side, side], stride: [0, 0] });
  return torchCheckpointBytes(state);
}

/**
 * A checkpoint whose one storage is a DEFLATE entry of `size` zero bytes (about `size / 1032` bytes in the file),
 * viewed by tensor `w` of `size / 4` float32 elements as `shape` (default flat). `declared` (default `size`) is
 * the uncompressed size the entry claims; pass a small one for an entry that lies. `crc` is only right when asked.
 */
export function inflateBomb(size: number, opts: { declared?: number; shape?: number[]; crc?: boolean } = {}) {
  const shape = opts.shape ?? [size / 4];
  const stride = shape.map((_, d) => shape.slice(d + 1).reduce((a, b) => a * b, 1));
  const state: TorchWriterState = new Map([["base", { shape: [1], data: new Float32Array(1) }]]);
  state.set("w", { viewOf: "base", shape, stride });
  let crc = 0;
  if (opts.crc) {
    const zeros = new Uint8Array(MiB);
    for (let left = size; left > 0; left -= MiB) crc = crc32(zeros.subarray(0, Math.min(left, MiB)), crc);
  }
  const raw = { "data/0": { stored: deflateZeros(size), method: 8 as const, size: opts.declared ?? size, crc } };
  return torchCheckpointBytes(state, { raw });
}

/**
 * `count` tensors that all view one 357 KB float32 storage: contiguous `[350, 255]` views, or transposed
 * `[255, 350]` ones (which cannot be views of the storage, so each would need its own copy).
 */
export function sharedStorage(count = 10000, transposed = false): Uint8Array {
  const data = Float32Array.from({ length: 350 * 255 }, (_, i) => i);
  const state: TorchWriterState = new Map([["base", { shape: [350, 255], data }]]);
  for (let i = 0; i < count; i++) {
    state.set(`t${i}`, {
      viewOf: "base",
      shape: transposed ? [255, 350] : [350, 255],
      stride: transposed ? [1, 255] : [255, 1],
    });
  }
  return torchCheckpointBytes(state);
}

/** A checkpoint whose `data.pkl` is `dicts` EMPTY_DICT opcodes, DEFLATE-compressed into a few kilobytes. */
export async function pickleBomb(dicts = 16 * MiB): Promise<Uint8Array> {
  const pkl = new Uint8Array(dicts + 3).fill(0x7d); // EMPTY_DICT
  pkl.set([0x80, 2], 0), pkl[pkl.length - 1] = 0x2e; // PROTO 2 … STOP
  const stream = new Blob([pkl]).stream().pipeThrough(new CompressionStream("deflate-raw"));
  const stored = new Uint8Array(await new Response(stream).arrayBuffer());
  const raw = { "data.pkl": { stored, method: 8 as const, size: pkl.length, crc: crc32(pkl) } };
  return torchCheckpointBytes({ w: { shape: [1], data: new Float32Array(1) } }, { raw });
}

/** An ordinary STORED float32 checkpoint of `mib` MiB in `[1024, 1024]` tensors. */
export function plainCheckpoint(mib = 48): Uint8Array {
  const state: TorchWriterState = new Map();
  for (let i = 0; i < mib / 4; i++) {
    state.set(`layer${i}.weight`, {
      shape: [1024, 1024],
      data: Float32Array.from({ length: 1024 * 1024 }, (_, j) => i + j / 1e6),
    });
  }
  return torchCheckpointBytes(state);
}
