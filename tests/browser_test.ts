/**
 * The demo page in a real browser: headless Chromium (WebGPU on SwiftShader, the CPU) loads `web/` with tiny random
 * models served over HTTP, runs a few PPO steps in the tab, and must show a reward curve and replies; the same run in
 * Deno (its WebGPU on llvmpipe, models read over HTTP through `formats/files.ts`) must agree with the tab's numbers.
 * Chromium comes from `deno task setup` (scripts/ensure_adapter.ts installs Debian's `chromium` when missing).
 */
import assert from "node:assert/strict";
import { initEngine } from "../engine/init.ts";
import { initModel } from "../app/init_model.ts";
import { buildWeb } from "../web/build.ts";
import { serveWeb } from "../web/serve.ts";
import { demoStep, openDemo, probeLogits } from "../web/demo.ts";
import { findChromium, openPage } from "./cdp.ts";

const WORDS = ("i you we it is was good bad great awful happy sad love hate the a and but not very so movie food day " +
  "place service nice terrible fine okay really today this that").split(" ");
const PROMPTS = [
  "the movie was",
  "i love this place",
  "today is a day",
  "the food is not",
  "we hate that",
  "it was okay",
];
const RUN = { seed: 1, batchSize: 4, miniBatchSize: 2, maxNewTokens: 8 };
const STEPS = 3;

/** Writes tiny random policy and reward folders and a manifest with prompts, as `deno task train` caches them. */
async function tinyModels(dir: string): Promise<void> {
  const vocab = `${dir}/vocab.txt`;
  await Deno.writeTextFile(vocab, ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ...WORDS].join("\n") + "\n");
  const size = { vocab, nLayer: 2, nEmbd: 32, nHead: 2, nPositions: 64 };
  await initModel({ like: "gpt2", ...size, seed: 3, outDir: `${dir}/policy` });
  await initModel({ like: "bert", ...size, seed: 4, outDir: `${dir}/reward` });
  await Deno.writeTextFile(`${dir}/manifest.json`, JSON.stringify({ prompts: PROMPTS }));
}

interface PageResults {
  adapter: string;
  probe: number[];
  steps: { step: number; rewardMean: number; kl: number; entropy: number; loss: number; responses: number[][] }[];
  samples: { prompt: string; reply: string; reward: number }[];
  comparison: { prompt: string; reference: string; policy: string; rewards: [number, number] };
}

async function waitForResults(page: Awaited<ReturnType<typeof openPage>>, seconds: number): Promise<PageResults> {
  const deadline = Date.now() + seconds * 1000;
  while (Date.now() < deadline) {
    const state = await page.evaluate<string>(`document.getElementById("results")?.dataset.state ?? "loading"`);
    const text = await page.evaluate<string>(`document.getElementById("results")?.textContent ?? ""`);
    if (state === "done") return JSON.parse(text);
    if (state === "error") throw new Error(`the page failed: ${text}\nconsole: ${page.console.join("\n")}`);
    await new Promise((r) => setTimeout(r, 500));
  }
  throw new Error(
    `no results after ${seconds} s; status: ${await page.evaluate(`document.getElementById("status").textContent`)}`,
  );
}

const maxAbsDiff = (a: readonly number[], b: readonly number[]) => Math.max(...a.map((x, i) => Math.abs(x - b[i])));

Deno.test("browser: the demo page runs PPO in headless Chromium and matches a Deno run on the same seed", async () => {
  const chromium = await findChromium();
  assert.ok(chromium, "chromium not found: run `deno task setup` (it installs Debian's chromium) or set CHROMIUM");
  const startedAt = performance.now();
  const dir = await Deno.makeTempDir({ prefix: "rlhf-browser-" });
  const stop = new AbortController();
  try {
    await tinyModels(dir);
    await buildWeb();
    const server = serveWeb({ port: 0, modelsDir: dir, signal: stop.signal });
    const base = `http://127.0.0.1:${server.addr.port}`;
    const query =
      `autorun=1&steps=${STEPS}&seed=${RUN.seed}&batch=${RUN.batchSize}&mini=${RUN.miniBatchSize}&tokens=${RUN.maxNewTokens}`;
    const page = await openPage(chromium, `${base}/?${query}`);
    let tab: PageResults;
    try {
      tab = await waitForResults(page, 200);
      const dom = await page.evaluate<{ points: number; replies: string[]; policy: string }>(`({
        points: document.querySelectorAll("#reward-chart circle").length,
        replies: [...document.querySelectorAll("#samples tr td:nth-child(2)")].map((td) => td.textContent),
        policy: document.getElementById("policy-reply").textContent })`);
      assert.equal(dom.points, STEPS, "one point per step on the reward curve");
      assert.ok(dom.replies.length > 0 && dom.replies.some((r) => r.trim().length > 0), `replies: ${dom.replies}`);
      assert.match(dom.policy, /reward \d\.\d{3}/);
      const shot = await page.send("Page.captureScreenshot", { format: "png" });
      await Deno.mkdir("runs/browser-test", { recursive: true });
      await Deno.writeFile(
        "runs/browser-test/screenshot.png",
        Uint8Array.from(atob(shot.data as string), (c) => c.charCodeAt(0)),
      );
    } finally {
      await page.close();
    }
    const browserSeconds = (performance.now() - startedAt) / 1000;
    assert.equal(tab.steps.length, STEPS);
    for (const s of tab.steps) {
      assert.ok(s.rewardMean >= 0 && s.rewardMean <= 1 && Number.isFinite(s.kl), JSON.stringify(s));
    }

    // The same run in Deno's WebGPU (the same kernels as the tab's), reading the models over HTTP from the same server.
    await initEngine({ backend: "webgpu" });
    const demo = await openDemo(`${base}/models/`, RUN);
    const probe = await probeLogits(demo);
    const probeScale = Math.max(...probe.map(Math.abs));
    const probeDiff = maxAbsDiff(probe, tab.probe);
    assert.ok(probeDiff <= 1e-4 * Math.max(1, probeScale), `logits differ by ${probeDiff} (scale ${probeScale})`);
    const figures: string[] = [`logits max |Δ| ${probeDiff.toExponential(2)} (max |logit| ${probeScale.toFixed(3)})`];
    for (let s = 1; s <= STEPS; s++) {
      const mine = await demoStep(demo, s), theirs = tab.steps[s - 1];
      assert.deepEqual(theirs.responses, mine.responses, `step ${s}: sampled tokens differ`);
      for (const key of ["rewardMean", "kl", "entropy", "loss"] as const) {
        const d = Math.abs(mine[key] - theirs[key]);
        assert.ok(
          d <= 1e-3 * Math.max(1, Math.abs(mine[key])),
          `step ${s} ${key}: Deno ${mine[key]}, browser ${theirs[key]}`,
        );
        figures.push(`step ${s} ${key} |Δ| ${d.toExponential(2)}`);
      }
    }
    const total = (performance.now() - startedAt) / 1000;
    console.log(
      `browser test: ${tab.adapter}; tab ${browserSeconds.toFixed(1)} s, total ${total.toFixed(1)} s\n  ${
        figures.join("\n  ")
      }`,
    );
    demo.trainer.dispose();
  } finally {
    stop.abort();
    await Deno.remove(dir, { recursive: true });
  }
});
