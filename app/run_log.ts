/**
 * A run's JSONL logs in its output folder: `metrics.jsonl` (one row per step) and `samples.jsonl` (sample responses
 * with the reference model's), read back tolerantly and cut back to a checkpoint's step on resumption.
 * @module
 */

import { writeFileAtomic } from "../formats/fs_atomic.ts";
import type { MetricsRow, SampleRow } from "./report.ts";

/**
 * The rows of a run's JSONL log (`metrics.jsonl`, `samples.jsonl`; none when the file is missing). A last line
 * without its newline that does not parse — torn when a crash or a full disk stopped the append — is dropped with a
 * line to `log`; any other bad line (not JSON, or without an integer "step") is an error naming file and line.
 */
export async function readRunLog<T extends { step: number }>(
  path: string,
  log: (line: string) => void = () => {},
): Promise<T[]> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return [];
    throw new Error(`${path}: unreadable (${(e as Error).message})`);
  }
  const lines = text.split("\n");
  const rows: T[] = [];
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    if (!line.trim()) continue;
    try {
      const v = JSON.parse(line);
      if (!v || typeof v !== "object" || !Number.isInteger(v.step)) throw new Error('no integer "step"');
      rows.push(v as T);
    } catch (e) {
      if (i === lines.length - 1) {
        log(`${path}: dropped a torn last line (line ${i + 1}, ${line.length} characters without a newline)`);
        continue;
      }
      throw new Error(`${path}:${i + 1}: bad line (${(e as Error).message}); remove or repair it to resume`);
    }
  }
  return rows;
}

/** Rows as JSON Lines text (one JSON value and a newline per row). */
export function toJsonLines(rows: readonly unknown[]): string {
  return rows.map((r) => JSON.stringify(r) + "\n").join("");
}

/** A run's logs in memory, the files they go to, and the step they reach. */
export interface RunLogs {
  /** Last step already done (the checkpoint's, or 0). */
  start: number;
  /** Path of metrics.jsonl. */
  metricsFile: string;
  /** Path of samples.jsonl. */
  samplesFile: string;
  /** Rows of metrics.jsonl. */
  metrics: MetricsRow[];
  /** Rows of samples.jsonl. */
  samples: SampleRow[];
}

/**
 * The logs of a run in `outDir` that resumes after step `resumedStep` (rows after it dropped, with a line to `log`
 * for the metrics), or of a fresh run when it is null (no rows).
 */
export async function restartRunLogs(
  outDir: string,
  resumedStep: number | null,
  log: (line: string) => void,
): Promise<RunLogs> {
  const logs: RunLogs = {
    start: resumedStep ?? 0,
    metricsFile: `${outDir}/metrics.jsonl`,
    samplesFile: `${outDir}/samples.jsonl`,
    metrics: [],
    samples: [],
  };
  if (resumedStep === null) return logs;
  const allMetrics = await readRunLog<MetricsRow>(logs.metricsFile, log);
  logs.metrics = allMetrics.filter((r) => r.step <= resumedStep);
  logs.samples = (await readRunLog<SampleRow>(logs.samplesFile, log)).filter((r) => r.step <= resumedStep);
  if (allMetrics.length > logs.metrics.length) {
    const dropped = allMetrics.length - logs.metrics.length;
    log(`${logs.metricsFile}: dropped ${dropped} rows after step ${resumedStep} (not in the checkpoint)`);
  }
  return logs;
}

/** Rewrites both files (atomically) with the rows in memory. */
export async function writeRunLogs(logs: RunLogs): Promise<void> {
  await writeFileAtomic(logs.metricsFile, toJsonLines(logs.metrics));
  await writeFileAtomic(logs.samplesFile, toJsonLines(logs.samples));
}
