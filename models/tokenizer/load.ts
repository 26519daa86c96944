/**
 * `loadTokenizer(dir)`: picks the right tokenizer implementation for a Hugging Face model folder.
 *
 * @module
 */

import { type FileKind, filesFor, isNotFound, joinPath as join, urlToPath } from "../../formats/files.ts";
import type { Tokenizer } from "./base.ts";
import { ByteLevelBpeTokenizer } from "./bpe.ts";
import { isFile } from "./config.ts";
import { HfJsonTokenizer } from "./hf_json.ts";
import { WordPieceTokenizer } from "./wordpiece.ts";

/** The files {@link loadTokenizer} looks for, in order of preference. */
export const TOKENIZER_FILES: readonly string[] = ["tokenizer.json", "vocab.txt", "vocab.json + merges.txt"];

/** Every file of a model folder that belongs to its tokenizer (what copying a tokenizer to another folder copies). */
export const TOKENIZER_FOLDER_FILES: readonly string[] = [
  "tokenizer.json",
  "tokenizer_config.json",
  "special_tokens_map.json",
  "added_tokens.json",
  "vocab.txt",
  "vocab.json",
  "merges.txt",
  "chat_template.jinja",
  "chat_template.json",
];

/**
 * Loads the tokenizer of a Hugging Face model folder:
 * 1. `tokenizer.json` → {@link HfJsonTokenizer} (npm `@huggingface/tokenizers`);
 * 2. `vocab.txt` → {@link WordPieceTokenizer} (BERT WordPiece);
 * 3. `vocab.json` + `merges.txt` → {@link ByteLevelBpeTokenizer} (GPT-2 byte-level BPE).
 *
 * `tokenizer_config.json`, `special_tokens_map.json`, `added_tokens.json` and chat template files are read
 * when present. Throws when the folder is missing or holds none of the tokenizer files.
 */
export async function loadTokenizer(dir: string | URL): Promise<Tokenizer> {
  const path = dir instanceof URL ? urlToPath(dir) : dir;
  let info: FileKind;
  try {
    info = await filesFor(path).stat(path);
  } catch (e) {
    if (isNotFound(e)) {
      throw new Error(`tokenizer: folder ${path} does not exist (looked for ${TOKENIZER_FILES.join(", ")})`);
    }
    throw e;
  }
  if (!info.isDirectory) throw new Error(`tokenizer: ${path} is not a folder`);
  if (await isFile(join(path, "tokenizer.json"))) return await HfJsonTokenizer.fromDir(path);
  if (await isFile(join(path, "vocab.txt"))) return await WordPieceTokenizer.fromDir(path);
  if (await isFile(join(path, "vocab.json")) && await isFile(join(path, "merges.txt"))) {
    return await ByteLevelBpeTokenizer.fromDir(path);
  }
  throw new Error(
    `tokenizer: no tokenizer files in ${path}; looked for ${TOKENIZER_FILES.join(", then ")}`,
  );
}
