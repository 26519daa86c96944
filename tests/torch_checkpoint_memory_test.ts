/**
 * Memory bombs against the PyTorch checkpoint reader: tiny files that declare (or really inflate to) gigabytes.
 * Each must fail fast with a TorchCheckpointError naming the file, the tensor or zip entry and the reason, and
 * loading must stay within about twice the file's real tensor bytes. Peak memory is measured in a child process
 * (`VmHWM`, see `torch_memory_probe.ts`) under a watchdog, so a regression fails the test instead of the machine.
 *
 * Figures on the reference machine (peak resident growth while loading; before the fix → after):
 * stride-(0,0) bomb 7.1 GB → 4 MB; 4 GiB DEFLATE entry > 8 GiB (killed) → 5 MB; the same entry declaring 4 bytes
 * > 8 GiB (killed) → 6 MB; honest 1 GiB DEFLATE entry 3.08 GB → 1.10 GB (with expected shapes; refused without);
 * 10,000 views of one 357 KB storage 3.44 GB → 40 MB; the same transposed 3.55 GB → 35 MB (refused);
 * 16 M-dict pickle 3.88 GB → 121 MB (refused); plain 48 MiB checkpoint 102 MB → 55 MB; honest 64 MiB DEFLATE entry
 * 199 MB → 111 MB.
 */
import assert from "node:assert/strict";
import { parseTorchCheckpoint, TorchCheckpointError } from "../formats/torch_checkpoint.ts";
import type { TorchCheckpointOptions } from "../formats/torch_checkpoint.ts";
import { torchCheckpointBytes } from "./torch_writer.ts";
import { matchWeights, readWeights } from "../models/weights.ts";
import { GPT2LMHeadModel } from "../models/gpt2.ts";
import { parseGPT2Config } from "../models/config.ts";
import { fixturePath } from "./fixtures.ts";
import {
  canMeasure,
  inflateBomb,
  pickleBomb,
  plainCheckpoint,
  probe,
  type ProbeOptions,
  sharedStorage,
  strideBomb,
} from "./torch_memory_probe.ts";

const MiB = 2 ** 20;
const GiB4 = 2 ** 32 - 4;

async function expectFail(bytes: Uint8Array, pattern: RegExp, options?: TorchCheckpointOptions): Promise<string> {
  const file = "bomb.bin";
  const e = await parseTorchCheckpoint(bytes, file, options).then(() => null, (e) => e);
  assert.ok(e instanceof TorchCheckpointError, `expected a TorchCheckpointError, got ${e}`);
  assert.ok(e.message.startsWith(`${file}: `), e.message);
  assert.match(e.message, pattern);
  assert.doesNotMatch(e.message, /internal error/);
  const raw = [...e.message].filter((c) => /\p{Cc}|[\u202a-\u202e\ufffd]/u.test(c));
  assert.deepEqual(raw, [], "no raw bytes in the message");
  return e.message;
}

Deno.test("stride-(0,0) views over a one-element storage are refused, naming the tensor", async () => {
  const bomb = strideBomb();
  assert.ok(bomb.length < 16 * 1024, `the bomb is small (${bomb.length} bytes)`);
  await expectFail(bomb, /^bomb\.bin: tensor w0: expanded view is too large: size \[4096,4096\] with stride \[0,0\]/);
  // With the model's shapes, the declared size is refused before anything else.
  const expectedShape = (n: string) => n === "base" ? [1] : [2, 2];
  await expectFail(bomb, /wrong shape: w0: expected \[2,2\], found \[4096,4096\], w1: /, { expectedShape });
  // Not needed by the model: never looked at.
  const m = await parseTorchCheckpoint(bomb, "bomb.bin", { expectedShape: (n) => n === "base" ? [1] : null });
  assert.deepEqual([...m.keys()], ["base"]);
});

Deno.test("a 4 MB DEFLATE entry that inflates to 4 GiB is refused before inflating; one that lies stops at once", async () => {
  const honest = inflateBomb(GiB4);
  assert.ok(honest.length < 5 * MiB, `the bomb is small (${honest.length} bytes)`);
  await expectFail(
    honest,
    /^bomb\.bin: loading would allocate 4294967292 bytes, more than the limit of \d+ .*storage 0 \(DEFLATE entry archive\/data\/0\)/,
  );
  await expectFail(honest, /wrong shape: w: expected \[1\], found \[1073741823\]/, { expectedShape: () => [1] });
  const liar = inflateBomb(GiB4, { declared: 4, shape: [1] });
  await expectFail(liar, /^bomb\.bin: tensor base: entry archive\/data\/0: inflates to more than its declared 4 bytes/);
  const impossible = inflateBomb(1000, { declared: 10_000_000, shape: [1] });
  await expectFail(impossible, /entry archive\/data\/0: declares 10000000 bytes from \d+ compressed bytes, more than/);
});

Deno.test("10,000 tensors over one storage share it; 10,000 transposed copies are refused", async () => {
  const m = await parseTorchCheckpoint(sharedStorage(), "shared.bin");
  assert.equal(m.size, 10001);
  const base = m.get("base")!.data;
  assert.equal(base.buffer.byteLength < 2 * MiB, true, "views into the file's bytes");
  for (const t of m.values()) assert.ok(t.data.buffer === base.buffer && t.data.byteOffset === base.byteOffset);
  assert.equal(m.get("t9999")!.data[12345], 12345);
  await expectFail(
    sharedStorage(10000, true),
    /^bomb\.bin: loading would allocate 3570000000 bytes, more than the limit .* the largest part is tensor t0/,
  );
});

Deno.test("size, stride and offset are bounded: negative, overflowing and out-of-range views are refused", async () => {
  const one = (shape: number[], stride: number[], offset = 0, name = "w") =>
    torchCheckpointBytes(
      new Map([["base", { shape: [8], data: new Float32Array(8) }], [name, {
        viewOf: "base",
        shape,
        stride,
        offset,
      }]]),
    );
  await expectFail(one([2], [-1]), /stride of tensor w\[0\] is -1, expected a non-negative integer/);
  await expectFail(one([2], [1], -3), /storage offset of tensor w is -3/);
  await expectFail(one([2 ** 40, 2 ** 40], [1, 1]), /tensor w: size \[1099511627776,1099511627776\] has more than/);
  await expectFail(one([3, 3], [3, 1]), /storage 0 too small for tensor w: needs 9 elements from offset 0, has 8/);
  await expectFail(one([4], [1], 2 ** 52), /too small for tensor w/);
  await expectFail(one([2], [2 ** 52], 0, "bad\x00\u202ename"), /too small for tensor bad\\u0000\\u202ename/);
  assert.deepEqual(Array.from((await parseTorchCheckpoint(one([3, 2], [0, 1]), "ok.bin")).get("w")!.data), [
    0,
    0,
    0,
    0,
    0,
    0,
  ]);
});

Deno.test("a pickle that builds millions of objects is refused", async () => {
  await expectFail(await pickleBomb(), /^bomb\.bin: pickle builds too many objects: more than 67108864 bytes/);
});

Deno.test("readWeights with the model's spec checks pytorch_model.bin shapes first and skips ignored buffers", async () => {
  const cfg = JSON.parse(await Deno.readTextFile(fixturePath("gpt2-tiny/config.json")));
  const dir = await Deno.makeTempDir();
  try {
    await Deno.copyFile(fixturePath("gpt2-tiny/pytorch_model.bin"), `${dir}/pytorch_model.bin`);
    const spec = GPT2LMHeadModel.paramSpec(parseGPT2Config(cfg));
    const opts = { prefix: "transformer.", ignore: /\.attn\.(bias|masked_bias)$|^lm_head\.weight$/ };
    const loaded = await readWeights(dir, spec, opts);
    assert.ok(!loaded.tensors.has("lm_head.weight"), "ignored tensors are not read");
    assert.equal(matchWeights(loaded, spec, opts).size, spec.size);
    const small = GPT2LMHeadModel.paramSpec(parseGPT2Config({ ...cfg, vocab_size: 1000 }));
    await assert.rejects(
      readWeights(dir, small, opts),
      /pytorch_model\.bin: weights do not match the model — wrong shape: transformer\.wte\.weight: expected \[1000,64\], found \[1396,64\]/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "peak memory: bombs stay small, real checkpoints stay within 2x their tensor bytes (child processes)",
  ignore: !canMeasure,
  fn: async () => {
    const dir = await Deno.makeTempDir();
    try {
      const cases: [string, Uint8Array, ProbeOptions & { ok: boolean; bound: (file: number, t: number) => number }][] =
        [
          ["stride", strideBomb(), { ok: false, bound: (f) => 2 * f + 64 * MiB }],
          ["inflate-4GiB", inflateBomb(GiB4), { ok: false, bound: (f) => 2 * f + 64 * MiB }],
          ["inflate-liar", inflateBomb(GiB4, { declared: 4, shape: [1] }), {
            ok: false,
            bound: (f) => 2 * f + 64 * MiB,
          }],
          ["shared", sharedStorage(), { ok: true, bound: (f) => 2 * f + 64 * MiB }],
          ["shared-T", sharedStorage(10000, true), { ok: false, bound: (f) => 2 * f + 64 * MiB }],
          // The pickle's own bound (64 MiB of estimated objects) plus its 16 MiB of inflated bytes.
          ["pickle", await pickleBomb(), { ok: false, bound: (f) => 2 * f + 160 * MiB }],
          // STORED float32 tensors are views into the file's one buffer: about 1x (it was 2.1x).
          ["plain-48MiB", plainCheckpoint(48), { ok: true, bound: (_, t) => 1.5 * t }],
          ["deflate-64MiB", inflateBomb(64 * MiB, { crc: true, shape: [4096, 4096] }), {
            ok: true,
            expected: { base: [1], w: [4096, 4096] },
            bound: (_, t) => 2 * t + 16 * MiB, // the entry's one buffer plus pieces awaiting GC (it was 3x)
          }],
        ];
      const results = await Promise.all(cases.map(async ([name, bytes, { ok, bound, ...options }]) => {
        await Deno.writeFile(`${dir}/${name}.bin`, bytes);
        return { name, bytes, ok, bound, r: await probe(`${dir}/${name}.bin`, { ...options, capBytes: 1536 * MiB }) };
      }));
      for (const { name, bytes, ok, bound, r } of results) {
        const what = `${name}: ${JSON.stringify(r)}`;
        assert.ok(!r.killed, what);
        assert.equal(r.ok, ok, what);
        if (ok) assert.ok(r.tensorBytes! > 0, what);
        if (!ok) assert.match(r.error!, new RegExp(`^${dir}/${name}\\.bin: `), what);
        const limit = bound(bytes.length, r.tensorBytes ?? 0);
        assert.ok(r.growth <= limit, `${what}: peak growth ${r.growth} > ${limit}`);
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
