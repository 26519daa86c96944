/**
 * Training checkpoints written atomically: a checkpoint is assembled in a temporary folder, every
 * file synced, and only then renamed to `checkpoint-<step>`; `latest.json` (also replaced
 * atomically) names the newest complete one. A crash at any point leaves the previous checkpoint
 * intact. Contents: the policy in Hugging Face format plus its value head, the optimiser moments
 * (`optimizer.safetensors`), and `trainer_state.json` (KL controller, score moments, RNG and step
 * counters, and the pipeline's own state). Nothing in a checkpoint is executed when loading.
 * @module
 */

import { readSafetensors, type SafetensorsWriteTensor, writeSafetensors } from "../engine/safetensors.ts";
import { writeJsonAtomic } from "../engine/fs_atomic.ts";
import type { CausalLMWithValueHead } from "../models/value_head.ts";
import type { PPOTrainerState } from "./trainer.ts";

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

async function exists(path: string): Promise<boolean> {
  return await Deno.stat(path).then(() => true).catch(() => false);
}

/** Saves a checkpoint of step `step` under `outDir` and points `latest.json` at it; returns its folder. */
export async function saveCheckpoint(
  outDir: string,
  step: number,
  policy: CausalLMWithValueHead,
  trainer: PPOTrainerState,
  run: RunState,
  keep = 2,
): Promise<string> {
  await Deno.mkdir(outDir, { recursive: true });
  const name = `checkpoint-${step}`;
  const final = `${outDir}/${name}`;
  const tmp = `${outDir}/.${name}.tmp-${Deno.pid}-${Date.now()}`;
  await Deno.mkdir(tmp, { recursive: true });
  try {
    await policy.savePretrained(tmp);
    const tensors: Record<string, SafetensorsWriteTensor> = {};
    const steps: Record<string, number> = {};
    for (const [idx, st] of Object.entries(trainer.optimizer.state)) {
      steps[idx] = st.step;
      for (const [buf, arr] of Object.entries(st)) {
        if (arr instanceof Float32Array) tensors[`${idx}.${buf}`] = { dtype: "F32", shape: [arr.length], data: arr };
      }
    }
    await writeSafetensors(`${tmp}/optimizer.safetensors`, tensors);
    const { optimizer, ...rest } = trainer;
    await writeJsonAtomic(`${tmp}/trainer_state.json`, {
      format: "rlhf-webgpu-checkpoint-1",
      step,
      trainer: { ...rest, optimizer: { paramGroups: optimizer.paramGroups, steps } },
      run,
    });
    if (await exists(final)) await Deno.remove(final, { recursive: true });
    await Deno.rename(tmp, final);
  } catch (e) {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
    throw e;
  }
  await writeJsonAtomic(`${outDir}/latest.json`, { checkpoint: name, step });
  // Prune older checkpoints (never the one just written).
  const all: number[] = [];
  for await (const e of Deno.readDir(outDir)) {
    const m = /^checkpoint-(\d+)$/.exec(e.name);
    if (e.isDirectory && m) all.push(Number(m[1]));
  }
  all.sort((a, b) => b - a);
  for (const s of all.slice(Math.max(1, keep))) {
    if (s !== step) await Deno.remove(`${outDir}/checkpoint-${s}`, { recursive: true }).catch(() => {});
  }
  return final;
}

/** Loads the checkpoint `latest.json` names (or null when `outDir` has none). Clear errors for damaged files. */
export async function loadCheckpoint(outDir: string): Promise<LoadedCheckpoint | null> {
  const latestFile = `${outDir}/latest.json`;
  if (!(await exists(latestFile))) return null;
  let latest: { checkpoint?: unknown; step?: unknown };
  try {
    latest = JSON.parse(await Deno.readTextFile(latestFile));
  } catch (e) {
    throw new Error(`${latestFile}: unreadable (${(e as Error).message})`);
  }
  if (typeof latest.checkpoint !== "string" || !/^checkpoint-\d+$/.test(latest.checkpoint)) {
    throw new Error(`${latestFile}: "checkpoint" must name a checkpoint-N folder`);
  }
  const dir = `${outDir}/${latest.checkpoint}`;
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
