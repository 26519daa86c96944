/**
 * GPT-2 training loss curves in fp32 and in mixed precision (f16 operands, f32 accumulation: the cooperative-matrix
 * kernel), from the same seeded weights on the same batches, for the "loss curves agree within noise" check.
 * The data is a synthetic language: an order-1 Markov chain over 512 tokens with 4 successors each, so the loss
 * falls from ln(vocabulary) (GPT-2's: 10.8) towards ln 4 ≈ 1.39. Dropout is off, so the runs differ only by the products' precision.
 *
 *     deno run -A bench/mixed_curve.ts [--steps 200] [--layers 12] [--batch 8] [--seq 256] [--vocab 50257]
 *       [--embd 768] [--out FILE]
 *
 * Prints (and writes) a JSON object: both curves, their mean difference over the last 50 steps, and the fp32 curve's
 * own step-to-step noise there (the standard deviation of its differences from a 9-step moving average).
 * @module
 */

import { AdamW, backward, initEngine, matmulPrecisionStatus, setMatmulPrecision, tensor, tidy } from "../engine/mod.ts";
import { disposeModel, gpt2Model } from "./models.ts";
import { engineOptions, now, sig } from "./lib.ts";

const arg = (name: string, def: number) => {
  const i = Deno.args.indexOf(`--${name}`);
  return i >= 0 ? Number(Deno.args[i + 1]) : def;
};
const steps = arg("steps", 200), layers = arg("layers", 12), B = arg("batch", 8), T = arg("seq", 256);
const vocab = arg("vocab", 50257), embd = arg("embd", 768);
const outFile = Deno.args.includes("--out") ? Deno.args[Deno.args.indexOf("--out") + 1] : null;

/** Batch `i` of the synthetic language: B rows of T tokens. */
function batch(i: number): number[] {
  let s = (i + 1) * 2654435761 >>> 0;
  const rnd = () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 4294967296;
  const ids: number[] = [];
  for (let r = 0; r < B; r++) {
    let t = Math.floor(rnd() * 512);
    for (let j = 0; j < T; j++) {
      ids.push(t * 97 % vocab); // spread the 512 tokens over the vocabulary
      t = (t * 31 + 7 + Math.floor(rnd() * 4) * 129) % 512;
    }
  }
  return ids;
}

async function curve(precision: "fp32" | "auto"): Promise<{ losses: number[]; ms_per_step: number }> {
  setMatmulPrecision(precision);
  const cfg = { n_layer: layers, n_embd: embd, n_head: 12, vocab_size: vocab, n_positions: 1024 };
  const model = gpt2Model({ ...cfg, embd_pdrop: 0, attn_pdrop: 0, resid_pdrop: 0 }).train();
  const opt = new AdamW(model.parameters(), { lr: 3e-4, weightDecay: 0 });
  const losses: number[] = [];
  const t0 = now();
  try {
    for (let i = 0; i < steps; i++) {
      const ids = tensor(batch(i), [B, T], "i32");
      opt.zeroGrad();
      const loss = tidy(() => {
        const l = model.forward({ inputIds: ids, labels: ids }).loss!;
        backward(l);
        return l;
      });
      opt.step();
      losses.push(await loss.item());
      loss.dispose();
      ids.dispose();
    }
  } finally {
    opt.zeroGrad();
    opt.dispose();
    disposeModel(model);
    setMatmulPrecision("auto");
  }
  return { losses, ms_per_step: sig((now() - t0) / steps) };
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

if (import.meta.main) {
  const rt = await initEngine({ ...(await engineOptions(null)), verbose: true });
  const status = matmulPrecisionStatus(rt);
  console.error(`[curve] ${status.reason}`);
  const report: Record<string, unknown> = { adapter: rt.handle.adapterName, steps, layers, B, T, precision: status };
  const fp32 = await curve("fp32");
  console.error(`[curve] fp32: ${fp32.losses[0]} → ${fp32.losses.at(-1)} (${fp32.ms_per_step} ms/step)`);
  report.fp32 = fp32;
  if (status.mixed) {
    const mixed = await curve("auto");
    console.error(`[curve] mixed: ${mixed.losses[0]} → ${mixed.losses.at(-1)} (${mixed.ms_per_step} ms/step)`);
    report.mixed = mixed;
    const tail = Math.min(50, steps);
    const f = fp32.losses.slice(-tail), m = mixed.losses.slice(-tail);
    const smooth = f.map((_, i) => mean(f.slice(Math.max(0, i - 4), i + 5)));
    const noise = Math.sqrt(mean(f.map((x, i) => (x - smooth[i]) ** 2)));
    report.summary = {
      last_steps: tail,
      fp32_mean: sig(mean(f), 5),
      mixed_mean: sig(mean(m), 5),
      mean_difference: sig(mean(m) - mean(f), 4),
      fp32_noise_std: sig(noise, 4),
      max_abs_difference_all_steps: sig(Math.max(...fp32.losses.map((x, i) => Math.abs(x - mixed.losses[i]))), 4),
      finite: mixed.losses.every(Number.isFinite),
    };
    console.error(`[curve] ${JSON.stringify(report.summary)}`);
  }
  const text = JSON.stringify(report);
  if (outFile) await Deno.writeTextFile(outFile, text + "\n");
  console.log(text);
  Deno.exit(0);
}
