/**
 * `report.html`: one self-contained page (inline SVG, no scripts or external files) showing a run's
 * reward, KL, per-token entropy and loss curves (labelled axes with values), the first-vs-last reward comparison,
 * and sample responses at several steps beside the reference model's reply to the same prompt.
 * @module
 */

import { writeFileAtomic } from "../formats/fs_atomic.ts";

/** One line of metrics.jsonl: the step number plus stats by name. */
export type MetricsRow = { step: number } & Record<string, number>;

/** A sampled (prompt, response, score) triple at a step. */
export interface SampleRow {
  /** Step it was generated at. */
  step: number;
  /** Prompt text. */
  prompt: string;
  /** Response text. */
  response: string;
  /** Reward model score. */
  score: number;
  /** The frozen reference model's reply to the same prompt (same sampling settings), when recorded. */
  refResponse?: string;
  /** Its reward model score. */
  refScore?: number;
}

const esc = (s: string) =>
  s.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]!);

function fmt(x: number): string {
  if (!Number.isFinite(x)) return String(x);
  const a = Math.abs(x);
  return a !== 0 && (a < 1e-3 || a >= 1e5) ? x.toExponential(2) : x.toFixed(a < 1 ? 4 : 2);
}

/** About `n` round tick values covering [lo, hi]. */
function ticks(lo: number, hi: number, n: number): number[] {
  const span = hi - lo;
  if (!(span > 0)) return [lo];
  const raw = span / n, mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? raw;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

/** An SVG line chart of one or more series over steps, with labelled axes and tick values. */
function chart(title: string, rows: MetricsRow[], keys: string[], yLabel: string): string {
  const W = 470, H = 240, L = 64, R = 12, T = 28, B = 42;
  const colors = ["#2563eb", "#dc2626", "#16a34a", "#9333ea"];
  const pts = keys.map((k) => rows.filter((r) => Number.isFinite(r[k])).map((r) => [r.step, r[k]] as const));
  const all = pts.flat();
  if (all.length === 0) return `<figure><figcaption>${esc(title)}</figcaption><p>no data</p></figure>`;
  const xs = all.map((p) => p[0]), ys = all.map((p) => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1);
  let y0 = Math.min(...ys), y1 = Math.max(...ys);
  if (y1 - y0 < 1e-12) [y0, y1] = [y0 - 1, y1 + 1];
  const sx = (x: number) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const sy = (y: number) => T + (1 - (y - y0) / (y1 - y0)) * (H - T - B);
  const lines = pts.map((p, i) =>
    `<polyline fill="none" stroke="${colors[i % 4]}" stroke-width="2" points="${
      p.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(" ")
    }"/>` + (p.length === 1 ? `<circle cx="${sx(p[0][0])}" cy="${sy(p[0][1])}" r="3" fill="${colors[i % 4]}"/>` : "")
  ).join("");
  const legend = keys.map((k, i) =>
    `<text x="${L + 4 + i * 150}" y="16" fill="${colors[i % 4]}" font-size="11">${esc(k)}</text>`
  ).join("");
  const grid = ticks(y0, y1, 4).map((y) =>
    `<line x1="${L}" x2="${W - R}" y1="${sy(y).toFixed(1)}" y2="${sy(y).toFixed(1)}" stroke="#e5e7eb"/>` +
    `<text x="${L - 4}" y="${(sy(y) + 4).toFixed(1)}" text-anchor="end" font-size="10">${fmt(y)}</text>`
  ).join("");
  const xt = ticks(x0, x1, 5).filter((x) => Number.isInteger(x)).map((x) =>
    `<line x1="${sx(x).toFixed(1)}" x2="${sx(x).toFixed(1)}" y1="${H - B}" y2="${H - B + 4}" stroke="#6b7280"/>` +
    `<text x="${sx(x).toFixed(1)}" y="${H - B + 15}" text-anchor="middle" font-size="10">${x}</text>`
  ).join("");
  const axes = `<line x1="${L}" x2="${W - R}" y1="${H - B}" y2="${H - B}" stroke="#6b7280"/>` +
    `<line x1="${L}" x2="${L}" y1="${T}" y2="${H - B}" stroke="#6b7280"/>${xt}` +
    `<text x="${(L + W - R) / 2}" y="${H - 6}" text-anchor="middle" font-size="11">PPO step</text>` +
    `<text transform="translate(12 ${(T + H - B) / 2}) rotate(-90)" text-anchor="middle" font-size="11">${
      esc(yLabel)
    }</text>`;
  return `<figure><figcaption>${esc(title)}</figcaption><svg viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" ` +
    `xmlns="http://www.w3.org/2000/svg" role="img" aria-label="${
      esc(title)
    }">${grid}${axes}${lines}${legend}</svg></figure>`;
}

/**
 * Mean of `key` over the first and last `n` finite values, `n` being `k` or, with fewer than `2k` values, half of them
 * (at least 1).
 */
export function firstLastMean(
  rows: MetricsRow[],
  key: string,
  k: number,
): { first: number; last: number; n: number } {
  const vals = rows.map((r) => r[key]).filter(Number.isFinite);
  const n = Math.max(1, Math.min(k, Math.floor(vals.length / 2) || 1));
  const mean = (a: number[]) => a.reduce((s, v) => s + v, 0) / Math.max(1, a.length);
  return { first: mean(vals.slice(0, n)), last: mean(vals.slice(-n)), n };
}

/** Renders the report page. */
export function renderReport(
  title: string,
  info: Record<string, string>,
  rows: MetricsRow[],
  samples: SampleRow[],
): string {
  const k = Math.max(1, Math.floor(rows.length / 5));
  const fl = firstLastMean(rows, "env/reward_mean", k);
  const sampleSteps = [...new Set(samples.map((s) => s.step))].sort((a, b) => a - b);
  const pick = sampleSteps.length <= 5
    ? sampleSteps
    : [0, 0.25, 0.5, 0.75, 1].map((f) => sampleSteps[Math.round(f * (sampleSteps.length - 1))]);
  const sampleHtml = [...new Set(pick)].map((step) => {
    const rs = samples.filter((s) => s.step === step).slice(0, 6);
    const withRef = rs.some((s) => s.refResponse !== undefined);
    const refCells = (s: SampleRow) =>
      withRef ? `<td>${esc(s.refResponse ?? "")}</td><td>${s.refScore === undefined ? "" : fmt(s.refScore)}</td>` : "";
    return `<h3>Step ${step}</h3><table><tr><th>prompt</th><th>policy's reply</th><th>score</th>${
      withRef ? "<th>reference model's reply</th><th>score</th>" : ""
    }</tr>${
      rs.map((s) =>
        `<tr><td>${esc(s.prompt)}</td><td>${esc(s.response)}</td><td>${fmt(s.score)}</td>${refCells(s)}</tr>`
      ).join("")
    }</table>`;
  }).join("");
  const infoRows = Object.entries(info).map(([a, b]) => `<tr><th>${esc(a)}</th><td>${esc(b)}</td></tr>`).join("");
  const delta = fl.last - fl.first;
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${esc(title)}</title><style>
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#111;max-width:1000px}
figure{display:inline-block;margin:8px;vertical-align:top}figcaption{font-weight:600}
table{border-collapse:collapse;margin:6px 0}td,th{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
.big{font-size:20px}.up{color:#16a34a}.down{color:#dc2626}</style></head><body>
<h1>${esc(title)}</h1><table>${infoRows}</table>
<p class="big">Reward mean, first ${k} step(s): <b>${fmt(fl.first)}</b> → last ${k} step(s): <b>${fmt(fl.last)}</b>
<span class="${delta >= 0 ? "up" : "down"}">(${delta >= 0 ? "+" : ""}${fmt(delta)})</span></p>
${chart("Reward (env/reward_mean)", rows, ["env/reward_mean"], "mean reward")}
${chart("KL to the reference (objective/kl)", rows, ["objective/kl"], "KL per reply (nats)")}
${chart("Policy entropy per token (ppo/policy/entropy)", rows, ["ppo/policy/entropy"], "nats per token")}
${chart("Losses", rows, ["ppo/loss/total", "ppo/loss/policy", "ppo/loss/value"], "loss")}
${chart("KL coefficient", rows, ["objective/kl_coef"], "β")}
${chart("Response length", rows, ["tokens/responses_len_mean"], "tokens")}
<h2>Samples</h2>${sampleHtml || "<p>none</p>"}
</body></html>`;
}

/** Writes `report.html` atomically. */
export async function writeReport(
  path: string,
  title: string,
  info: Record<string, string>,
  rows: MetricsRow[],
  samples: SampleRow[],
): Promise<void> {
  await writeFileAtomic(path, renderReport(title, info, rows, samples));
}
