/**
 * Reruns of `train.ts`'s embedded default: a second `deno run -A train.ts` (no flags) replaces the previous demo run
 * in the default output folder instead of stopping at "already holds a run", while any other run there stays
 * protected.
 * @module
 */

/** Report title of the embedded default's runs (recorded in their `run.json`). */
export const EMBEDDED_TITLE = "RLHF demo: small GPT-2 steered by a sentiment classifier";

/** What `train.ts` was given, as far as {@linkcode replacesDemoRun} needs it. */
export interface DemoRerunInput {
  /** Running the embedded default (no --policy/--reward/--prompts). */
  embedded: boolean;
  /** --out was given. */
  outGiven: boolean;
  /** --resume was given. */
  resume: boolean;
  /** --overwrite was given. */
  overwrite: boolean;
}

/**
 * Whether `train.ts` should replace the run in `outDir` without being told to: only for the embedded default with
 * none of --out, --resume and --overwrite, and only when `outDir/run.json` says its run was the embedded default
 * (its `title` is {@linkcode EMBEDDED_TITLE}). Anything else (a user's run, a folder without a readable run.json) is
 * left to the output folder's refusal, whose message names --resume and --overwrite.
 * @param outDir the default output folder
 * @param given what the user gave
 */
export async function replacesDemoRun(outDir: string, given: DemoRerunInput): Promise<boolean> {
  if (!given.embedded || given.outGiven || given.resume || given.overwrite) return false;
  let run: unknown;
  try {
    run = JSON.parse(await Deno.readTextFile(`${outDir}/run.json`));
  } catch {
    return false;
  }
  return typeof run === "object" && run !== null && (run as { title?: unknown }).title === EMBEDDED_TITLE;
}
