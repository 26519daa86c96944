/**
 * `deno task bundle`: builds the browser files into `web/dist/`: `rlhf-webgpu.js`, the library (`web/lib.ts`) as one
 * ES module with every WGSL kernel embedded (no shader files to serve), and `page.js`, the demo page's script, which
 * loads the library bundle beside it. Uses `deno bundle` (esbuild) for the browser platform.
 * @module
 */

const ROOT = new URL("../", import.meta.url);

/** The sources of every `shaders/*.wgsl` file, by name without the extension. */
export async function shaderSources(): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const names: string[] = [];
  for await (const e of Deno.readDir(new URL("shaders/", ROOT))) if (e.name.endsWith(".wgsl")) names.push(e.name);
  for (const name of names.sort()) out[name.slice(0, -5)] = await Deno.readTextFile(new URL(`shaders/${name}`, ROOT));
  return out;
}

async function denoBundle(entry: string, output: string): Promise<void> {
  const args = ["bundle", "--quiet", "--platform", "browser", "--config", new URL("deno.json", ROOT).pathname];
  const cmd = new Deno.Command(Deno.execPath(), {
    args: [...args, "-o", output, entry],
    stdout: "piped",
    stderr: "piped",
  });
  const { code, stdout, stderr } = await cmd.output();
  if (code !== 0) {
    const text = new TextDecoder().decode(new Uint8Array([...stdout, ...stderr]));
    throw new Error(`deno bundle ${entry} failed (exit ${code}):\n${text}`);
  }
}

/** What {@linkcode buildWeb} wrote. */
export interface WebBuild {
  /** The library bundle. */
  library: string;
  /** The page script. */
  page: string;
  /** Size of the library bundle in bytes. */
  libraryBytes: number;
}

/**
 * Bundles the library (with the shaders embedded through `provideShaders`) and the page script into `outDir`
 * (default `web/dist/`).
 */
export async function buildWeb(outDir: string = new URL("web/dist/", ROOT).pathname): Promise<WebBuild> {
  await Deno.mkdir(outDir, { recursive: true });
  const tmp = await Deno.makeTempDir({ prefix: "rlhf-web-" });
  try {
    const entry = `${tmp}/entry.ts`;
    const shaders = new URL("engine/shaders.ts", ROOT).href, lib = new URL("web/lib.ts", ROOT).href;
    await Deno.writeTextFile(
      entry,
      `import { provideShaders } from ${JSON.stringify(shaders)};\n` +
        `provideShaders(${JSON.stringify(await shaderSources())});\nexport * from ${JSON.stringify(lib)};\n`,
    );
    const library = `${outDir.replace(/\/$/, "")}/rlhf-webgpu.js`, page = `${outDir.replace(/\/$/, "")}/page.js`;
    await denoBundle(entry, library);
    await denoBundle(new URL("web/page.ts", ROOT).pathname, page);
    return { library, page, libraryBytes: (await Deno.stat(library)).size };
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
}

if (import.meta.main) {
  const built = await buildWeb(Deno.args[0]);
  console.log(`web: ${built.library} (${(built.libraryBytes / 1024).toFixed(0)} KiB), ${built.page}`);
}
