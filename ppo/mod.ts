/**
 * PPO for RLHF with TRL's classic `PPOTrainer` semantics: configuration ({@linkcode ppoConfig}), the host-side
 * math (rewards, GAE, whitening, KL controllers, running moments), the fused GPU PPO loss, and the trainer.
 * The application around it (the RLHF run, prompts, checkpoints, report) lives in `app/`.
 * @module
 */

export * from "./config.ts";
export * from "./core.ts";
export * from "./loss.ts";
export * from "./trainer.ts";
