/**
 * The library as the browser bundle exports it (`deno task bundle` → `web/dist/rlhf-webgpu.js`): the engine, the
 * models and tokenizers, the PPO algorithm, file access over HTTP and the demo's calls. It leaves out what needs a
 * file system or a process (the `train.ts` application in `app/`, checkpoints, atomic writes); model folders load
 * over HTTP through `formats/files.ts`.
 * @module
 */

export * from "../engine/mod.ts";
export * from "../models/mod.ts";
export * from "../ppo/mod.ts";
export {
  denoFiles,
  exists,
  type FileKind,
  FileNotFoundError,
  filesFor,
  type FileSource,
  httpFiles,
  isNotFound,
  isRemote,
  joinPath,
} from "../formats/files.ts";
export * from "./demo.ts";
