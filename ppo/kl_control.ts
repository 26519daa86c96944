/**
 * The KL coefficient β and how it changes between steps: TRL's adaptive (Ziegler et al.) and fixed KL
 * controllers, with a serialisable state for checkpoints.
 * @module
 */

/** Serialised state of a KL controller. */
export interface KLControllerState {
  /** "adaptive" or "fixed". */
  kind: "adaptive" | "fixed";
  /** Current coefficient. */
  value: number;
  /** Target KL (adaptive only). */
  target?: number;
  /** Horizon (adaptive only). */
  horizon?: number;
}

/** The KL coefficient β and its update rule. */
export interface KLController {
  /** Current β. */
  value: number;
  /** Updates β after a step with mean KL `current` over `nSteps` samples. */
  update(current: number, nSteps: number): void;
  /** Serialisable state. */
  toJSON(): KLControllerState;
}

/** Ziegler et al.'s adaptive KL controller (TRL's `AdaptiveKLController`). */
export class AdaptiveKLController implements KLController {
  /** Current β. */
  value: number;
  /** Creates the controller. */
  constructor(initKlCoef: number, readonly target: number, readonly horizon: number) {
    this.value = initKlCoef;
  }
  /** e = clip(current/target − 1, −0.2, 0.2); β ← β·(1 + e·nSteps/horizon). */
  update(current: number, nSteps: number): void {
    const e = Math.min(0.2, Math.max(-0.2, current / this.target - 1));
    this.value *= 1 + e * nSteps / this.horizon;
  }
  /** Serialisable state. */
  toJSON(): KLControllerState {
    return { kind: "adaptive", value: this.value, target: this.target, horizon: this.horizon };
  }
}

/** A constant β (TRL's `FixedKLController`). */
export class FixedKLController implements KLController {
  /** Creates the controller. */
  constructor(public value: number) {}
  /** Does nothing. */
  update(_current: number, _nSteps: number): void {}
  /** Serialisable state. */
  toJSON(): KLControllerState {
    return { kind: "fixed", value: this.value };
  }
}

/** Rebuilds a controller from {@linkcode KLController.toJSON}'s output. */
export function klControllerFromJSON(s: KLControllerState): KLController {
  if (!s || typeof s.value !== "number") throw new Error("klControllerFromJSON: invalid state");
  if (s.kind === "fixed") return new FixedKLController(s.value);
  if (s.kind === "adaptive" && typeof s.target === "number" && typeof s.horizon === "number") {
    return new AdaptiveKLController(s.value, s.target, s.horizon);
  }
  throw new Error(`klControllerFromJSON: invalid state ${JSON.stringify(s)}`);
}
