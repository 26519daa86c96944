/**
 * The CPU backend's host memory: buffers start on a 64-byte boundary, and writes, copies and reads go through that
 * start (the kernels' views, tested by the whole suite under `deno task test:cpu`, use the same one).
 */

import assert from "node:assert/strict";
import { CpuRuntime } from "../engine/cpu/runtime.ts";
import { HOST_ALIGNMENT, type HostBuffer } from "../engine/storage.ts";

const address = (bytes: Uint8Array) => Deno.UnsafePointer.value(Deno.UnsafePointer.of(bytes));

Deno.test("cpu runtime: host buffers start on a 64-byte boundary; write, copy and read use that start", async () => {
  assert.equal(HOST_ALIGNMENT, 64);
  const rt = new CpuRuntime();
  const sizes = [4, 100, 256, 1000, 4096, 65_536, 1 << 20, 3 * (1 << 20) + 12];
  for (const bytes of sizes) {
    const s = rt.alloc(bytes);
    const host = s.buffer as HostBuffer;
    assert.ok(host.offset >= 0 && host.offset < HOST_ALIGNMENT, `offset ${host.offset}`);
    assert.equal(BigInt(address(new Uint8Array(host.data, host.offset))) % 64n, 0n, `${bytes} bytes`);
    assert.ok(host.data.byteLength >= host.offset + host.size, "the usable bytes fit after the padding");
    const data = Float32Array.from({ length: bytes >> 2 }, (_, i) => i * 0.5 - 3);
    rt.write(s, data);
    const [back] = await rt.read([{ storage: s, bytes: data.byteLength }]);
    assert.deepEqual(new Float32Array(back), data);
    // The padding before the start is never written: the bytes land at the aligned start.
    assert.deepEqual(new Uint8Array(host.data, 0, host.offset), new Uint8Array(host.offset));
    if (data.length > 1) {
      assert.equal(new Float32Array(host.data, host.offset, 2)[1], data[1]);
      const t = rt.alloc(bytes);
      rt.copy(s, 4, t, 0, data.byteLength - 4);
      const [copied] = await rt.read([{ storage: t, bytes: data.byteLength - 4 }]);
      assert.deepEqual(new Float32Array(copied), data.subarray(1));
      t.release();
    }
    s.release();
  }
});
