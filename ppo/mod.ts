/**
 * PPO for RLHF with TRL's classic `PPOTrainer` semantics: configuration ({@linkcode ppoConfig}), the host-side
 * math (rewards, GAE, whitening, KL controllers, running moments), the fused GPU PPO loss, and the trainer.
 * @module
 */

export * from "./config.ts";
export * from "./core.ts";
export * from "./loss.ts";
export * from "./trainer.ts";
export * from "./prompts.ts";
export * from "./rlhf.ts";
export * from "./checkpoint.ts";
export * from "./health.ts";
export * from "./outdir.ts";
export * from "./report.ts";
export * from "./progress.ts";
