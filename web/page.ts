/// <reference lib="dom" />
/**
 * The demo page's script (bundled to `web/dist/page.js`): loads the library bundle, opens the models folder, runs PPO
 * steps with live reward/KL curves and sample replies, and compares the reference's and the policy's replies to a
 * prompt the user types. Query parameters: `models` (folder address, default `/models/`), `steps` (default 30),
 * `seed`, `batch`, `mini`, `tokens`, and `autorun=1` (start at once; the browser test uses it). When a run ends, the
 * `#results` element holds its figures as JSON and `data-state="done"` (`"error"` and the message when it failed).
 * @module
 */

type Lib = typeof import("./lib.ts");
type Session = Awaited<ReturnType<Lib["openDemo"]>>;
type Step = Awaited<ReturnType<Lib["demoStep"]>>;

const params = new URLSearchParams(location.search);
const num = (name: string, fallback: number) => params.has(name) ? Number(params.get(name)) : fallback;
const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

function status(text: string): void {
  $("status").textContent = text;
}

/** Draws one series as an SVG polyline with its axis range written beside it. */
function drawChart(id: string, values: number[]): void {
  const svg = $<HTMLElement>(id), W = 320, H = 140, pad = 8;
  const lo = Math.min(...values, 0), hi = Math.max(...values, lo + 1e-6);
  const x = (i: number) => pad + (values.length < 2 ? 0 : (i * (W - 2 * pad)) / (values.length - 1));
  const y = (v: number) => H - pad - ((v - lo) / (hi - lo)) * (H - 2 * pad);
  const points = values.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
  const dots = values.map((v, i) => `<circle cx="${x(i).toFixed(1)}" cy="${y(v).toFixed(1)}" r="3"/>`).join("");
  svg.innerHTML = `<polyline points="${points}"/>${dots}` +
    `<text x="${W - pad}" y="14" text-anchor="end">max ${hi.toFixed(3)}</text>` +
    `<text x="${W - pad}" y="${H - 12}" text-anchor="end">min ${lo.toFixed(3)}</text>`;
}

function cell(row: HTMLTableRowElement, text: string): void {
  row.insertCell().textContent = text;
}

function showSamples(step: Step): void {
  const body = $<HTMLTableSectionElement>("samples");
  body.innerHTML = "";
  for (const s of step.samples) {
    const row = body.insertRow();
    cell(row, s.prompt);
    cell(row, s.reply);
    cell(row, s.reward.toFixed(3));
  }
  $("sample-step").textContent = `step ${step.step}`;
}

async function runSteps(lib: Lib, session: Session, steps: number): Promise<Step[]> {
  const done: Step[] = [];
  for (let s = 1; s <= steps; s++) {
    const step = await lib.demoStep(session, s);
    done.push(step);
    drawChart("reward-chart", done.map((d) => d.rewardMean));
    drawChart("kl-chart", done.map((d) => d.kl));
    showSamples(step);
    status(
      `step ${s}/${steps}: reward ${step.rewardMean.toFixed(3)}, KL ${step.kl.toFixed(4)} (${
        step.seconds.toFixed(1)
      } s)`,
    );
  }
  return done;
}

async function compare(lib: Lib, session: Session): Promise<Awaited<ReturnType<Lib["compareReplies"]>>> {
  const prompt = $<HTMLInputElement>("prompt").value.trim() || session.prompts[0];
  const c = await lib.compareReplies(session, prompt);
  $("ref-reply").textContent = `${c.reference}  (reward ${c.rewards[0].toFixed(3)})`;
  $("policy-reply").textContent = `${c.policy}  (reward ${c.rewards[1].toFixed(3)})`;
  return c;
}

async function run(lib: Lib): Promise<Record<string, unknown>> {
  const rt = await lib.initEngine();
  const adapter = rt.handle.adapterName;
  status(`WebGPU on ${adapter}; loading models…`);
  const models = params.get("models") ?? "/models/";
  const session = await lib.openDemo(new URL(models, location.href).href, {
    seed: num("seed", 0),
    batchSize: num("batch", 16),
    miniBatchSize: num("mini", 4),
    maxNewTokens: num("tokens", 12),
  });
  $<HTMLInputElement>("prompt").value = session.prompts[0];
  $<HTMLButtonElement>("compare").onclick = () => void compare(lib, session).catch((e) => status(String(e)));
  const probe = await lib.probeLogits(session);
  const steps = await runSteps(lib, session, num("steps", 30));
  const comparison = await compare(lib, session);
  return {
    adapter,
    probe,
    steps: steps.map(({ samples: _s, ...rest }) => rest),
    samples: steps.at(-1)?.samples,
    comparison,
  };
}

async function main(): Promise<void> {
  const results = $("results");
  const start = async () => {
    $<HTMLButtonElement>("start").disabled = true;
    results.dataset.state = "running";
    try {
      const lib: Lib = await import(new URL("./rlhf-webgpu.js", import.meta.url).href);
      const out = await run(lib);
      results.textContent = JSON.stringify(out);
      results.dataset.state = "done";
    } catch (e) {
      status(`error: ${(e as Error).message}`);
      results.textContent = String((e as Error).stack ?? e);
      results.dataset.state = "error";
    }
  };
  $<HTMLButtonElement>("start").onclick = () => void start();
  if (!("gpu" in navigator)) status("this browser has no WebGPU (navigator.gpu is missing)");
  if (params.get("autorun") === "1") await start();
}

void main();
