/**
 * The RLHF application behind `train.ts` and `cli.ts`: the whole run (generate → score → step), prompt files,
 * checkpoints, the run's output folder, divergence checks, progress lines and the HTML report.
 * @module
 */

export * from "./prompts.ts";
export * from "./rlhf.ts";
export * from "./run_log.ts";
export * from "./checkpoint.ts";
export * from "./health.ts";
export * from "./outdir.ts";
export * from "./report.ts";
export * from "./progress.ts";
