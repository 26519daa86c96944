import { assert } from "./helpers.ts";

Deno.test("README's TypeScript examples type-check against the library", async () => {
  const root = new URL("..", import.meta.url);
  const readme = await Deno.readTextFile(new URL("README.md", root));
  const blocks = [...readme.matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1]);
  assert.ok(blocks.length >= 3, "README has TypeScript examples");
  const dir = await Deno.makeTempDir({ dir: root.pathname, prefix: ".readme-" });
  try {
    const files: string[] = [];
    for (const [i, code] of blocks.entries()) {
      const f = `${dir}/example_${i}.ts`;
      await Deno.writeTextFile(f, code.replaceAll('"./mod.ts"', '"../mod.ts"') + "\nexport {};\n");
      files.push(f);
    }
    const out = await new Deno.Command(Deno.execPath(), { args: ["check", ...files], stdout: "piped", stderr: "piped" })
      .output();
    assert.ok(out.success, new TextDecoder().decode(out.stderr));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
