/**
 * Headless Chromium driven over the Chrome DevTools Protocol, for the browser test: finds Debian's `chromium`,
 * starts it with WebGPU on SwiftShader (the CPU), opens a page and sends CDP commands to it over a WebSocket.
 */

/** Where Chromium may be; `CHROMIUM` overrides. */
const CANDIDATES = ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"];

/** The Chromium binary on PATH (or `$CHROMIUM`), or null when there is none. */
export async function findChromium(): Promise<string | null> {
  const given = Deno.env.get("CHROMIUM");
  if (given) return given;
  for (const name of CANDIDATES) {
    const { code, stdout } = await new Deno.Command("sh", { args: ["-c", `command -v ${name}`], stdout: "piped" })
      .output();
    if (code === 0) return new TextDecoder().decode(stdout).trim();
  }
  return null;
}

/** The flags that give headless Chromium a WebGPU adapter on a machine without a GPU. */
export const WEBGPU_FLAGS: readonly string[] = [
  "--headless",
  "--no-sandbox",
  "--enable-unsafe-webgpu",
  "--enable-features=Vulkan",
  "--use-webgpu-adapter=swiftshader",
  "--disable-gpu-sandbox",
  "--no-first-run",
  "--window-size=1100,1100",
];

/** A page in a running Chromium, with a CDP connection to it. */
export interface BrowserPage {
  /** Sends a CDP command and resolves with its result (rejects with CDP's error). */
  send(method: string, params?: Record<string, unknown>): Promise<Record<string, unknown>>;
  /** Evaluates an expression in the page and returns its value (awaiting promises). */
  evaluate<T>(expression: string): Promise<T>;
  /** Closes the connection and stops Chromium. */
  close(): Promise<void>;
  /** Console messages and exceptions the page reported. */
  console: string[];
}

async function devtoolsPort(stderr: ReadableStream<Uint8Array>): Promise<number> {
  const reader = stderr.getReader(), decoder = new TextDecoder();
  let text = "";
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    const { value, done } = await reader.read();
    if (done) break;
    text += decoder.decode(value, { stream: true });
    const m = text.match(/DevTools listening on ws:\/\/[^:]+:(\d+)\//);
    if (m) {
      void reader.read().then(function drain(r): unknown {
        return r.done ? undefined : reader.read().then(drain);
      }).catch(() => {});
      return Number(m[1]);
    }
  }
  throw new Error(`chromium did not start its DevTools server:\n${text.slice(-2000)}`);
}

function connect(url: string): Promise<WebSocket> {
  const ws = new WebSocket(url);
  return new Promise((resolve, reject) => {
    ws.onopen = () => resolve(ws);
    ws.onerror = (e) => reject(new Error(`CDP connection to ${url} failed: ${(e as ErrorEvent).message ?? e}`));
  });
}

/** Starts Chromium on `url` with {@linkcode WEBGPU_FLAGS} and connects to the page. */
export async function openPage(chromium: string, url: string): Promise<BrowserPage> {
  const profile = await Deno.makeTempDir({ prefix: "rlhf-chromium-" });
  const child = new Deno.Command(chromium, {
    args: [...WEBGPU_FLAGS, `--user-data-dir=${profile}`, "--remote-debugging-port=0", url],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const port = await devtoolsPort(child.stderr);
  const targets = await (await fetch(`http://127.0.0.1:${port}/json/list`)).json() as {
    type: string;
    webSocketDebuggerUrl: string;
  }[];
  const page = targets.find((t) => t.type === "page");
  if (!page) throw new Error("chromium opened no page");
  const consoleLog: string[] = [];
  const ws = await connect(page.webSocketDebuggerUrl);
  const pending = new Map<number, { resolve: (v: Record<string, unknown>) => void; reject: (e: Error) => void }>();
  ws.onmessage = (e) => {
    const msg = JSON.parse(e.data);
    if (msg.id !== undefined) {
      const p = pending.get(msg.id);
      pending.delete(msg.id);
      if (msg.error) p?.reject(new Error(`CDP: ${msg.error.message}`));
      else p?.resolve(msg.result);
    } else if (msg.method === "Runtime.consoleAPICalled") {
      consoleLog.push(msg.params.args.map((a: { value?: unknown }) => String(a.value)).join(" "));
    } else if (msg.method === "Runtime.exceptionThrown") {
      consoleLog.push(
        `exception: ${msg.params.exceptionDetails.exception?.description ?? msg.params.exceptionDetails.text}`,
      );
    }
  };
  let nextId = 1;
  const send = (method: string, params: Record<string, unknown> = {}) =>
    new Promise<Record<string, unknown>>((resolve, reject) => {
      const id = nextId++;
      pending.set(id, { resolve, reject });
      ws.send(JSON.stringify({ id, method, params }));
    });
  await send("Runtime.enable");
  return {
    send,
    console: consoleLog,
    async evaluate<T>(expression: string): Promise<T> {
      const r = await send("Runtime.evaluate", { expression, returnByValue: true, awaitPromise: true });
      if (r.exceptionDetails) throw new Error(`page: ${JSON.stringify(r.exceptionDetails)}`);
      return (r.result as { value: T }).value;
    },
    async close() {
      ws.close();
      try {
        child.kill("SIGTERM");
      } catch { /* already gone */ }
      await child.status;
      await Deno.remove(profile, { recursive: true }).catch(() => {});
    },
  };
}
