/**
 * Training checkpoints written atomically: a checkpoint is assembled in a temporary folder, every
 * file synced, and only then renamed to `checkpoint-<step>`; `latest.json` (also replaced
 * atomically) names the newest complete one. A crash at any point leaves the previous checkpoint
 * intact. Contents: the policy in Hugging Face format (a LoRA run: its adapter in peft's format) plus its value
 * head, the optimiser moments (`optimizer.safetensors`), `trainer_state.json` (KL controller, score moments, RNG and step
 * counters, and the pipeline's own state) and, written last, `manifest.json`: every other file's size
 * and SHA-256. Loading verifies the manifest and falls back to the newest intact checkpoint when the
 * newest is damaged. Nothing in a checkpoint is executed when loading.
 * @module
 */

import { createHash } from "node:crypto";
import { readSafetensors, type SafetensorsWriteTensor, writeSafetensors } from "../formats/safetensors.ts";
import { exists, writeJsonAtomic } from "../formats/fs_atomic.ts";
import { TOKENIZER_FOLDER_FILES } from "../models/tokenizer/load.ts";
import type { CausalLMWithValueHead } from "../models/value_head.ts";
import { savePolicy } from "../models/lora_policy.ts";
import type { PPOTrainerState } from "../ppo/trainer.ts";

/** Pipeline state stored next to the trainer state (anything JSON-serialisable). */
export type RunState = Record<string, unknown>;

/** What {@linkcode loadCheckpoint} returns. */
export interface LoadedCheckpoint {
  /** Folder of the checkpoint (a Hugging Face model folder with value_head.safetensors). */
  dir: string;
  /** Step the checkpoint was taken after. */
  step: number;
  /** Trainer state (optimiser moments restored as Float32Arrays). */
  trainer: PPOTrainerState;
  /** Pipeline state. */
  run: RunState;
}

const MANIFEST = "manifest.json";
const MANIFEST_FORMAT = "rlhf-webgpu-manifest-1";
/** Files every checkpoint has besides the policy's weights (the manifest lists them all). */
const REQUIRED = ["value_head.safetensors", "optimizer.safetensors", "trainer_state.json"];
/** One of these describes the policy: a model's config.json, or a LoRA run's peft adapter_config.json. */
const POLICY_CONFIGS = ["config.json", "adapter_config.json"];

/** SHA-256 (hex) and size of a file, read in chunks (checkpoints can be gigabytes). */
async function fileDigest(path: string): Promise<{ bytes: number; sha256: string }> {
  const h = createHash("sha256");
  let bytes = 0;
  using f = await Deno.open(path, { read: true });
  const buf = new Uint8Array(1 << 22);
  for (;;) {
    const n = await f.read(buf);
    if (n === null) break;
    h.update(buf.subarray(0, n));
    bytes += n;
  }
  return { bytes, sha256: h.digest("hex") };
}

/** Writes `manifest.json` for the files of `dir` (all but the manifest itself). */
async function writeManifest(dir: string): Promise<void> {
  const files: Record<string, { bytes: number; sha256: string }> = {};
  const names: string[] = [];
  for await (const e of Deno.readDir(dir)) if (e.isFile && e.name !== MANIFEST) names.push(e.name);
  for (const name of names.sort()) files[name] = await fileDigest(`${dir}/${name}`);
  await writeJsonAtomic(`${dir}/${MANIFEST}`, { format: MANIFEST_FORMAT, files });
}

/**
 * What is wrong with the checkpoint folder `dir`, or null when its manifest matches every file (size and SHA-256)
 * and the required files are there. A checkpoint from before manifests were written is checked for its required
 * files only.
 */
export async function checkpointDamage(dir: string): Promise<string | null> {
  const mf = `${dir}/${MANIFEST}`;
  if (!(await exists(mf))) {
    if (await exists(`${dir}/trainer_state.json`)) {
      // Written before manifests existed: require its files to be present.
      for (const f of REQUIRED) if (!(await exists(`${dir}/${f}`))) return `${f} is missing`;
      return (await exists(`${dir}/config.json`)) ? null : "config.json is missing";
    }
    return `${MANIFEST} is missing`;
  }
  let m: { format?: unknown; files?: Record<string, { bytes?: unknown; sha256?: unknown }> };
  try {
    m = JSON.parse(await Deno.readTextFile(mf));
  } catch (e) {
    return `${MANIFEST} is unreadable (${(e as Error).message})`;
  }
  if (m.format !== MANIFEST_FORMAT || !m.files || typeof m.files !== "object") return `${MANIFEST} is not a manifest`;
  for (const f of REQUIRED) if (!(f in m.files)) return `${MANIFEST} does not list ${f}`;
  if (!POLICY_CONFIGS.some((f) => f in m.files!)) return `${MANIFEST} does not list ${POLICY_CONFIGS.join(" or ")}`;
  for (const [name, want] of Object.entries(m.files)) {
    if (!/^[\w.-]+$/.test(name)) return `${MANIFEST} names an invalid file "${name.slice(0, 60)}"`;
    const st = await Deno.stat(`${dir}/${name}`).catch(() => null);
    if (!st?.isFile) return `${name} is missing`;
    if (st.size !== want.bytes) return `${name} has ${st.size} bytes, the manifest says ${want.bytes}`;
    if ((await fileDigest(`${dir}/${name}`)).sha256 !== want.sha256) return `${name} does not match its SHA-256`;
  }
  return null;
}

/**
 * Files of a Hugging Face model folder besides the weights and config that a checkpoint copies from the policy's
 * folder, so that each checkpoint is a complete model folder (tokenizer included) that loads on its own.
 */
export const MODEL_SIDE_FILES: readonly string[] = [...TOKENIZER_FOLDER_FILES, "generation_config.json"];

/** Options of {@linkcode saveCheckpoint}. */
export interface SaveCheckpointOptions {
  /** Keep at most this many checkpoints, deleting the oldest (never the new one); 0 or absent: keep all. */
  totalLimit?: number;
  /** A model folder (the policy's) whose tokenizer and generation files are copied in ({@linkcode MODEL_SIDE_FILES}). */
  sideFilesFrom?: string;
}

/** Saves a checkpoint of step `step` under `outDir` and points `latest.json` at it; returns its folder. */
export async function saveCheckpoint(
  outDir: string,
  step: number,
  policy: CausalLMWithValueHead,
  trainer: PPOTrainerState,
  run: RunState,
  options: SaveCheckpointOptions = {},
): Promise<string> {
  await Deno.mkdir(outDir, { recursive: true });
  const name = `checkpoint-${step}`;
  const final = `${outDir}/${name}`;
  const tmp = `${outDir}/.${name}.tmp-${Deno.pid}-${Date.now()}`;
  await Deno.mkdir(tmp, { recursive: true });
  try {
    await savePolicy(policy, tmp); // a LoRA policy: peft's adapter files and the value head
    if (options.sideFilesFrom) await copySideFiles(options.sideFilesFrom, tmp);
    await writeTrainerState(tmp, step, trainer, run);
    await writeManifest(tmp);
    if (await exists(final)) await Deno.remove(final, { recursive: true });
    await Deno.rename(tmp, final);
  } catch (e) {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
    throw e;
  }
  await writeJsonAtomic(`${outDir}/latest.json`, { checkpoint: name, step });
  await pruneCheckpoints(outDir, step, options.totalLimit);
  return final;
}

/** Copies the {@linkcode MODEL_SIDE_FILES} that `from` has and `dir` lacks. */
async function copySideFiles(from: string, dir: string): Promise<void> {
  for (const f of MODEL_SIDE_FILES) {
    const source = `${from}/${f}`;
    if (await exists(`${dir}/${f}`) || !(await exists(source))) continue;
    await Deno.copyFile(source, `${dir}/${f}`);
  }
}

/** Writes `optimizer.safetensors` (the moments, `<param>.<buffer>`) and `trainer_state.json` (everything else). */
async function writeTrainerState(dir: string, step: number, trainer: PPOTrainerState, run: RunState): Promise<void> {
  const tensors: Record<string, SafetensorsWriteTensor> = {};
  const steps: Record<string, number> = {};
  for (const [idx, st] of Object.entries(trainer.optimizer.state)) {
    steps[idx] = st.step;
    for (const [buf, arr] of Object.entries(st)) {
      if (arr instanceof Float32Array) tensors[`${idx}.${buf}`] = { dtype: "F32", shape: [arr.length], data: arr };
    }
  }
  await writeSafetensors(`${dir}/optimizer.safetensors`, tensors);
  const { optimizer, ...rest } = trainer;
  await writeJsonAtomic(`${dir}/trainer_state.json`, {
    format: "rlhf-webgpu-checkpoint-1",
    step,
    trainer: { ...rest, optimizer: { paramGroups: optimizer.paramGroups, steps } },
    run,
  });
}

/** The steps of the `checkpoint-N` folders in `outDir`, in no particular order. */
async function checkpointSteps(outDir: string): Promise<number[]> {
  const steps: number[] = [];
  for await (const e of Deno.readDir(outDir)) {
    const m = /^checkpoint-(\d+)$/.exec(e.name);
    if (e.isDirectory && m) steps.push(Number(m[1]));
  }
  return steps;
}

/** Keeps the newest `totalLimit` checkpoints (all when absent or 0), never removing the one of `justSaved`. */
async function pruneCheckpoints(outDir: string, justSaved: number, totalLimit?: number): Promise<void> {
  const all = (await checkpointSteps(outDir)).sort((a, b) => b - a);
  const keep = totalLimit && totalLimit > 0 ? totalLimit : Infinity;
  for (const s of all.slice(Math.max(1, keep))) {
    if (s !== justSaved) await Deno.remove(`${outDir}/checkpoint-${s}`, { recursive: true }).catch(() => {});
  }
}

/**
 * Loads the newest intact checkpoint of `outDir`, or null when it has none: the one `latest.json` names, then the
 * other `checkpoint-N` folders newest first. A checkpoint whose manifest does not match its files (missing,
 * truncated or altered) or whose state cannot be read is skipped with a warning to `log` naming what was wrong;
 * when every checkpoint is damaged the error lists them all.
 */
export async function loadCheckpoint(
  outDir: string,
  log: (line: string) => void = () => {},
): Promise<LoadedCheckpoint | null> {
  const candidates = await checkpointCandidates(outDir, log);
  if (candidates === null) return null;
  const problems: string[] = [];
  for (const name of candidates) {
    const dir = `${outDir}/${name}`;
    if (!(await exists(dir))) {
      problems.push(`${dir}: missing`);
      continue;
    }
    const { loaded, why } = await tryLoadCheckpointDir(dir);
    if (loaded) {
      if (problems.length) log(`resume: using ${dir} instead (${problems.length} newer checkpoint(s) damaged)`);
      return loaded;
    }
    problems.push(`${dir}: ${why}`);
    log(`resume: skipping damaged checkpoint ${dir}: ${why}`);
  }
  if (problems.length) throw new Error(`no intact checkpoint in ${outDir}: ${problems.join("; ")}`);
  return null;
}

/** Checkpoint folder names to try, best first: latest.json's, then the others newest first (null: no outDir). */
async function checkpointCandidates(outDir: string, log: (line: string) => void): Promise<string[] | null> {
  const candidates: string[] = [];
  const latestFile = `${outDir}/latest.json`;
  if (await exists(latestFile)) {
    try {
      const latest = JSON.parse(await Deno.readTextFile(latestFile));
      if (typeof latest?.checkpoint === "string" && /^checkpoint-\d+$/.test(latest.checkpoint)) {
        candidates.push(latest.checkpoint);
      } else log(`${latestFile}: "checkpoint" does not name a checkpoint-N folder; looking for checkpoints`);
    } catch (e) {
      log(`${latestFile}: unreadable (${(e as Error).message}); looking for checkpoints`);
    }
  }
  if (!(await exists(outDir))) return null;
  for (const s of (await checkpointSteps(outDir)).sort((a, b) => b - a)) {
    if (!candidates.includes(`checkpoint-${s}`)) candidates.push(`checkpoint-${s}`);
  }
  return candidates;
}

/** One checkpoint folder loaded, or why not (its damage, or the error reading it). */
async function tryLoadCheckpointDir(dir: string): Promise<{ loaded: LoadedCheckpoint | null; why: string | null }> {
  const damage = await checkpointDamage(dir);
  if (damage) return { loaded: null, why: damage };
  try {
    return { loaded: await loadCheckpointDir(dir), why: null };
  } catch (e) {
    return { loaded: null, why: (e as Error).message };
  }
}

/** Loads one checkpoint folder (assumed verified). Clear errors for damaged files. */
async function loadCheckpointDir(dir: string): Promise<LoadedCheckpoint> {
  const stateFile = `${dir}/trainer_state.json`;
  let state: {
    format?: string;
    step?: number;
    trainer?: Omit<PPOTrainerState, "optimizer"> & {
      optimizer: { paramGroups: PPOTrainerState["optimizer"]["paramGroups"]; steps: Record<string, number> };
    };
    run?: RunState;
  };
  try {
    state = JSON.parse(await Deno.readTextFile(stateFile));
  } catch (e) {
    throw new Error(`${stateFile}: unreadable (${(e as Error).message})`);
  }
  if (state.format !== "rlhf-webgpu-checkpoint-1" || !state.trainer || !Number.isInteger(state.step)) {
    throw new Error(`${stateFile}: not a rlhf-webgpu checkpoint (format, step or trainer missing)`);
  }
  const { tensors } = await readSafetensors(`${dir}/optimizer.safetensors`);
  const optState: PPOTrainerState["optimizer"]["state"] = {};
  for (const [idx, step] of Object.entries(state.trainer.optimizer.steps ?? {})) {
    const entry: Record<string, number | Float32Array> = { step };
    for (const [name, t] of tensors) {
      const [i, buf] = name.split(".");
      if (i === idx && t.data instanceof Float32Array) entry[buf] = t.data;
    }
    optState[Number(idx)] = entry as PPOTrainerState["optimizer"]["state"][number];
  }
  const trainer: PPOTrainerState = {
    ...state.trainer,
    optimizer: { state: optState, paramGroups: state.trainer.optimizer.paramGroups },
  };
  return { dir, step: state.step!, trainer, run: state.run ?? {} };
}
