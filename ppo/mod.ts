/**
 * PPO for RLHF with TRL's classic `PPOTrainer` semantics: configuration ({@linkcode ppoConfig}), the host-side
 * math (rewards, GAE, whitening, KL controllers, running moments), the fused GPU PPO loss, and the trainer.
 * The application around it (the RLHF run, prompts, checkpoints, report) lives in `app/`.
 * @module
 */

export * from "./config.ts";
export type { Rows } from "./rows.ts";
export * from "./masked_stats.ts";
export * from "./rewards.ts";
export * from "./advantages.ts";
export * from "./kl_control.ts";
export * from "./moments.ts";
export * from "./batch.ts";
export * from "./stats.ts";
export { SeededRng } from "../engine/random.ts";
export * from "./loss.ts";
export * from "./trainer.ts";
