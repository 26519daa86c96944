import { assert } from "./helpers.ts";
import { compileNote, formatDuration, StepClock } from "../app/progress.ts";

Deno.test("formatDuration: seconds, minutes, hours", () => {
  assert.deepEqual(
    [0, 12.34, 59.94, 60, 83.4, 3599, 3723, -1, NaN].map(formatDuration),
    ["0.0s", "12.3s", "59.9s", "1m00s", "1m23s", "59m59s", "1h02m", "?", "?"],
  );
});

Deno.test("StepClock: latest step time, ETA from the recent pace without the compiling first step", () => {
  let t = 1000;
  const clock = new StepClock(10, 0, 3, () => t);
  t += 9000; // step 1: 9 s (kernel compilation)
  let r = clock.tick(1);
  assert.equal(r.stepSeconds, 9);
  assert.ok(Number.isNaN(r.etaSeconds), "only the compiling first step is known: no ETA yet");
  t += 1000; // step 2: 1 s
  r = clock.tick(2);
  assert.equal(r.stepSeconds, 1);
  assert.equal(r.etaSeconds, 8 * 1, "the first step no longer counts");
  t += 4000; // steps 3–4 in one tick: 2 s each
  r = clock.tick(4);
  assert.equal(r.stepSeconds, 2);
  assert.equal(r.etaSeconds, 6 * (5 / 3), "pace of the last 3 steps: (1 + 4) s / 3");
  for (let s = 5; s <= 9; s++) {
    t += 3000;
    r = clock.tick(s);
  }
  assert.equal(r.etaSeconds, 3, "window of 3 steps at 3 s each, one step left");
  t += 3000;
  r = clock.tick(10);
  assert.equal(r.etaSeconds, 0);
  assert.equal(r.elapsedSeconds, 9 + 1 + 4 + 6 * 3);
  clock.total = 12; // the total may change (e.g. a time cap): the ETA follows
  t += 3000;
  assert.equal(clock.tick(11).etaSeconds, 3);
});

Deno.test("StepClock: a one-step run ends with ETA 0; a resumed run counts from its start step", () => {
  let u = 0;
  const one = new StepClock(1, 0, 10, () => u);
  u += 3000;
  assert.deepEqual(one.tick(1), { stepSeconds: 3, etaSeconds: 0, elapsedSeconds: 3 });
  let t = 0;
  const clock = new StepClock(30, 20, 10, () => t);
  t += 5000;
  assert.ok(Number.isNaN(clock.tick(21).etaSeconds));
  t += 2000;
  assert.equal(clock.tick(22).etaSeconds, 8 * 2);
});

Deno.test("compileNote: minutes on the GL software path, seconds on a CPU adapter, a few seconds on a GPU", () => {
  assert.match(compileNote({ graphicsApi: "gl", isFallbackAdapter: true }), /^minutes on wgpu's OpenGL backend/);
  assert.equal(compileNote({ graphicsApi: "vulkan", isFallbackAdapter: true }), "seconds on a CPU adapter");
  assert.equal(compileNote({ graphicsApi: "vulkan", isFallbackAdapter: false }), "a few seconds");
});
