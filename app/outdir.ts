/**
 * The output folder of a run: one writer at a time (an exclusive lock file, with stale locks of dead processes
 * detected), no accidental reuse (a folder that already holds a run is refused unless resumed or overwritten), and
 * the temporary folders of saves a crash interrupted removed at start.
 * @module
 */

/** What a lock file records. */
interface LockInfo {
  pid: number;
  host: string;
  started: string;
}

/** Name of the lock file inside the output folder. */
export const LOCK_FILE = ".lock";

/** A held lock; {@linkcode OutDirLock.release} removes it (only if it is still ours). */
export interface OutDirLock {
  /** Path of the lock file. */
  path: string;
  /** Removes the lock file. */
  release(): Promise<void>;
}

function hostname(): string {
  try {
    return Deno.hostname();
  } catch {
    return "unknown";
  }
}

/** Whether process `pid` on this machine is alive and a Deno process (a reused pid of another program is not). */
async function processAlive(pid: number): Promise<boolean> {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  if (pid === Deno.pid) return true;
  if (Deno.build.os === "linux") {
    try {
      const cmd = await Deno.readTextFile(`/proc/${pid}/cmdline`);
      return /deno/i.test(cmd);
    } catch {
      return false;
    }
  }
  try {
    const out = await new Deno.Command("ps", { args: ["-p", String(pid), "-o", "comm="], stdout: "piped" }).output();
    return out.success && /deno/i.test(new TextDecoder().decode(out.stdout));
  } catch {
    return true; // cannot tell: do not take a lock that may be live
  }
}

async function readLock(path: string): Promise<LockInfo | null> {
  try {
    const v = JSON.parse(await Deno.readTextFile(path));
    if (Number.isInteger(v?.pid) && typeof v?.host === "string") return v as LockInfo;
  } catch { /* torn or foreign: treated below */ }
  return null;
}

/**
 * Takes the exclusive lock of `dir` (created if missing). A lock held by a live process fails with a clear error
 * naming it; the lock of a process that no longer runs on this machine (killed, crashed) is replaced, with a line to
 * `log`. A lock from another host cannot be checked and is refused (delete it when sure that run has ended).
 */
export async function lockOutDir(dir: string, log: (line: string) => void = () => {}): Promise<OutDirLock> {
  await Deno.mkdir(dir, { recursive: true });
  const path = `${dir}/${LOCK_FILE}`;
  const me: LockInfo = { pid: Deno.pid, host: hostname(), started: new Date().toISOString() };
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      await Deno.writeTextFile(path, JSON.stringify(me) + "\n", { createNew: true });
      return {
        path,
        release: async () => {
          const now = await readLock(path);
          if (now && now.pid === me.pid && now.host === me.host) await Deno.remove(path).catch(() => {});
        },
      };
    } catch (e) {
      if (!(e instanceof Deno.errors.AlreadyExists)) throw e;
    }
    const held = await readLock(path);
    if (held === null) {
      // Unreadable: a lock torn by a crash while it was written (it is written in one small write), or not ours.
      const age = Date.now() - ((await Deno.stat(path).catch(() => null))?.mtime?.getTime() ?? 0);
      if (age < 10_000) {
        throw new Error(`${dir}: ${LOCK_FILE} is unreadable and recent; another run may be starting there`);
      }
      log(`${dir}: removing an unreadable ${LOCK_FILE} (${Math.round(age / 1000)} s old)`);
    } else if (held.host !== me.host) {
      throw new Error(
        `${dir} is locked by pid ${held.pid} on host ${held.host} (since ${held.started}); if that run has ended, ` +
          `delete ${path}`,
      );
    } else if (await processAlive(held.pid)) {
      throw new Error(
        `${dir} is in use by another run (pid ${held.pid}, since ${held.started}); wait for it to finish or use ` +
          "another output folder",
      );
    } else {
      log(`${dir}: removing the stale lock of pid ${held.pid} (since ${held.started}; that process has ended)`);
    }
    await Deno.remove(path).catch(() => {});
  }
  throw new Error(`${dir}: could not take ${LOCK_FILE} (another run keeps taking it)`);
}

/** The files and folders of a run in an output folder (what {@linkcode prepareOutDir} looks for and replaces). */
const RUN_FILES = ["latest.json", "metrics.jsonl", "samples.jsonl", "report.html", "run.json"];
const RUN_DIR = /^checkpoint-\d+$/;
const TMP_DIR = /^\.checkpoint-\d+\.tmp-/;

/**
 * Readies a locked output folder: removes the temporary folders of interrupted saves (`.checkpoint-N.tmp-*`);
 * refuses a folder that already holds a run (checkpoints, latest.json, metrics or samples) unless `resume` (continue
 * it) or `overwrite` (its run files are removed first) is set.
 */
export async function prepareOutDir(
  dir: string,
  mode: { resume?: boolean; overwrite?: boolean },
  log: (line: string) => void = () => {},
): Promise<void> {
  const found: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    if (TMP_DIR.test(e.name)) {
      await Deno.remove(`${dir}/${e.name}`, { recursive: true }).catch(() => {});
      log(`${dir}: removed ${e.name}, left by an interrupted save`);
    } else if ((e.isDirectory && RUN_DIR.test(e.name)) || (e.isFile && RUN_FILES.includes(e.name))) {
      found.push(e.name);
    }
  }
  if (found.length === 0 || mode.resume) return;
  found.sort();
  if (!mode.overwrite) {
    throw new Error(
      `${dir} already holds a run (${found.slice(0, 4).join(", ")}${found.length > 4 ? ", …" : ""}): continue it ` +
        "with --resume, replace it with --overwrite, or choose another --out",
    );
  }
  for (const name of found) await Deno.remove(`${dir}/${name}`, { recursive: true });
  log(`${dir}: overwrite: removed the previous run (${found.length} files and folders)`);
}
