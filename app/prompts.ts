/**
 * Prompt datasets for RLHF runs: JSONL lines such as `{"conversation":[{"utterance":"…"}, …]}` (the
 * seed's dialog format; the first utterance is the prompt), `{"prompt"|"query"|"text": "…"}`, or plain
 * text lines. Bad lines are reported with their line number and skipped.
 * @module
 */

import { printable } from "../formats/safetensors.ts";

/** A skipped line and why. */
export interface SkippedLine {
  /** 1-based line number. */
  line: number;
  /** What was wrong. */
  reason: string;
}

/** Parsed prompts plus the lines that were skipped. */
export interface PromptSet {
  /** Prompt texts in file order. */
  prompts: string[];
  /** Lines that could not be used. */
  skipped: SkippedLine[];
  /** "jsonl" or "text". */
  format: "jsonl" | "text";
}

function fromJson(value: unknown): string {
  if (typeof value === "string") return value;
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new Error("expected a JSON object or string");
  }
  const record = value as Record<string, unknown>;
  if ("conversation" in record) {
    const conv = record.conversation;
    if (!Array.isArray(conv) || conv.length === 0) throw new Error(`"conversation" must be a non-empty array`);
    const first = conv[0] as Record<string, unknown> | string;
    const utterance = typeof first === "string" ? first : first?.utterance ?? first?.text ?? first?.content;
    if (typeof utterance !== "string") throw new Error(`"conversation[0].utterance" is missing or not a string`);
    return utterance;
  }
  for (const key of ["prompt", "query", "text", "utterance"]) {
    if (key in record) {
      if (typeof record[key] !== "string") throw new Error(`"${key}" must be a string`);
      return record[key] as string;
    }
  }
  throw new Error(`no "conversation", "prompt", "query" or "text" field`);
}

/**
 * Parses prompt-file text. The format is JSONL when `name` ends in .jsonl/.json or the first
 * non-empty line starts with "{", else one prompt per line.
 */
export function parsePrompts(text: string, name = "prompts"): PromptSet {
  const lines = text.replace(/^\uFEFF/, "").split(/\r?\n/);
  const firstLine = lines.find((l) => l.trim() !== "")?.trim() ?? "";
  const format = /\.jsonl?$/i.test(name) || firstLine.startsWith("{") ? "jsonl" : "text";
  const prompts: string[] = [];
  const skipped: SkippedLine[] = [];
  lines.forEach((raw, i) => {
    const line = raw.trim();
    const n = i + 1;
    if (line === "") {
      if (i < lines.length - 1) skipped.push({ line: n, reason: "empty line" });
      return;
    }
    let prompt: string;
    if (format === "jsonl") {
      let value: unknown;
      try {
        value = JSON.parse(line);
      } catch (e) {
        skipped.push({ line: n, reason: `invalid JSON (${printable((e as Error).message)})` });
        return;
      }
      try {
        prompt = fromJson(value);
      } catch (e) {
        skipped.push({ line: n, reason: (e as Error).message });
        return;
      }
    } else {
      prompt = line;
    }
    prompt = prompt.trim();
    if (prompt === "") skipped.push({ line: n, reason: "empty prompt" });
    else prompts.push(prompt);
  });
  return { prompts, skipped, format };
}

/** Reads and parses a prompt file; a missing file or one without a usable line is an error naming it. */
export async function loadPrompts(path: string): Promise<PromptSet> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    throw new Error(
      e instanceof Deno.errors.NotFound ? `${path}: prompt file not found` : `${path}: ${(e as Error).message}`,
    );
  }
  const set = parsePrompts(text, path);
  if (set.prompts.length === 0) {
    const why = set.skipped.slice(0, 3).map((s) => `line ${s.line}: ${s.reason}`).join("; ");
    throw new Error(`${path}: no usable prompts${why ? ` (${why})` : ""}`);
  }
  return set;
}
