// report.html: labelled axes with tick values, per-token entropy, the reference model's reply beside the policy's.
import { assert } from "./helpers.ts";
import { type MetricsRow, renderReport, type SampleRow } from "../app/report.ts";

const rows: MetricsRow[] = Array.from({ length: 20 }, (_, i) => ({
  step: i + 1,
  "env/reward_mean": 0.2 + i * 0.03,
  "objective/kl": i * 0.01,
  "objective/entropy": 30 - i,
  "ppo/policy/entropy": 2.5 - i * 0.05,
  "ppo/loss/total": 0.1,
  "ppo/loss/policy": -0.01,
  "ppo/loss/value": 0.2,
  "objective/kl_coef": 0.2,
  "tokens/responses_len_mean": 12,
}));
const samples: SampleRow[] = [
  { step: 1, prompt: "p<1>", response: "a & b", score: 0.25, refResponse: "ref <reply>", refScore: 0.125 },
  { step: 20, prompt: "p2", response: "good", score: 0.9, refResponse: "meh", refScore: 0.3 },
];

Deno.test("report: axes are labelled with tick values; entropy is per token; reference replies sit beside the policy's", () => {
  const html = renderReport("RLHF: gpt2 steered by bert", { policy: "gpt2" }, rows, samples);
  assert.match(html, /<title>RLHF: gpt2 steered by bert<\/title>/);
  const charts = html.match(/<svg/g)!.length;
  assert.equal(html.match(/>PPO step<\/text>/g)!.length, charts, "every chart labels its x axis");
  for (const y of ["mean reward", "KL per reply (nats)", "nats per token", "loss", "tokens"]) {
    assert.match(
      html,
      new RegExp(`rotate\\(-90\\)" text-anchor="middle" font-size="11">${y.replace(/[()]/g, "\\$&")}<`),
    );
  }
  // x ticks at round steps (5, 10, 15, 20) and y ticks with values.
  for (const x of [5, 10, 15, 20]) assert.match(html, new RegExp(`text-anchor="middle" font-size="10">${x}</text>`));
  assert.match(html, /Policy entropy per token \(ppo\/policy\/entropy\)/);
  assert.ok(!/objective\/entropy/.test(html), "the summed entropy is not charted");
  assert.match(html, /<th>reference model's reply<\/th>/);
  assert.match(html, /<td>ref &lt;reply&gt;<\/td><td>0\.1250<\/td>/);
  assert.match(html, /<td>a &amp; b<\/td>/);
});

Deno.test("report: samples without reference replies keep the three-column table", () => {
  const html = renderReport("t", {}, rows, [{ step: 1, prompt: "p", response: "r", score: 0.5 }]);
  assert.ok(!html.includes("reference model's reply"));
  assert.match(html, /<th>prompt<\/th><th>policy's reply<\/th><th>score<\/th><\/tr>/);
});
