/**
 * Chat-template rendering with the `@huggingface/jinja` npm package (the Jinja subset HF chat templates use).
 *
 * @module
 */

import { Template } from "@huggingface/jinja";
import type { ChatMessage, ChatTemplateOptions, SpecialTokens } from "./types.ts";

const compiled = new Map<string, Template>();

function compile(source: string): Template {
  let template = compiled.get(source);
  if (!template) {
    template = new Template(source);
    compiled.set(source, template);
  }
  return template;
}

/** Picks the template text: an explicit template, a named one, the `default` one, or the only one. */
function selectTemplate(
  available: string | Record<string, string> | undefined,
  requested: string | undefined,
  where: string,
): string {
  if (typeof available === "object") {
    if (requested !== undefined) return available[requested] ?? requested;
    if (available.default !== undefined) return available.default;
    const names = Object.keys(available);
    if (names.length === 1) return available[names[0]];
    throw new Error(
      `tokenizer: ${where} has several chat templates (${names.join(", ")}); pass {chatTemplate: name}`,
    );
  }
  if (requested !== undefined) return requested;
  if (available === undefined) {
    throw new Error(
      `tokenizer: ${where} has no chat template (looked for "chat_template" in tokenizer_config.json, ` +
        `chat_template.jinja and chat_template.json); pass {chatTemplate: "..."} to supply one`,
    );
  }
  return available;
}

/**
 * Renders a chat template like transformers' `apply_chat_template(..., tokenize=False)`.
 * Template variables: `messages`, `add_generation_prompt`, the special tokens as strings
 * (`bos_token`, `eos_token`, `unk_token`, `sep_token`, `pad_token`, `cls_token`, `mask_token`,
 * `additional_special_tokens`) and `options.extraContext`; `raise_exception` is built in.
 */
export function renderChatTemplate(
  available: string | Record<string, string> | undefined,
  messages: ChatMessage[],
  specialTokens: SpecialTokens,
  options: ChatTemplateOptions = {},
  where = "this tokenizer",
): string {
  const source = selectTemplate(available, options.chatTemplate, where);
  const context: Record<string, unknown> = {
    ...options.extraContext,
    messages,
    add_generation_prompt: options.addGenerationPrompt ?? false,
    bos_token: specialTokens.bosToken,
    eos_token: specialTokens.eosToken,
    unk_token: specialTokens.unkToken,
    sep_token: specialTokens.sepToken,
    pad_token: specialTokens.padToken,
    cls_token: specialTokens.clsToken,
    mask_token: specialTokens.maskToken,
    additional_special_tokens: specialTokens.additionalSpecialTokens ?? [],
  };
  for (const key of Object.keys(context)) if (context[key] === undefined) delete context[key];
  return compile(source).render(context);
}
