/**
 * Input plumbing the models share: checking token ids, checking and uploading attention masks, and
 * the default position ids (a plain range, or derived from the mask so that padding is skipped).
 * @module
 */

import { type Tensor, tensor } from "../engine/tensor.ts";

/** Checks that `ids` is an i32 [batch, seq] tensor and returns its [batch, seq]. */
export function checkTokenIds(ids: Tensor, label: string): [number, number] {
  if (ids.dtype !== "i32" || ids.ndim !== 2) {
    throw new Error(`${label}: inputIds must be an i32 [batch, seq] tensor, got ${ids}`);
  }
  return [ids.shape[0], ids.shape[1]];
}

/** An attention mask on the GPU, and its host rows when it was given as rows. */
export interface KeyPaddingMask {
  /** The mask, i32 [batch, length] (absent: no padding). */
  tensor?: Tensor;
  /** The host rows it was uploaded from (absent when given as a tensor). */
  rows?: number[][];
}

/**
 * Checks an attention mask (host rows or a tensor) against [batch, length] and uploads host rows.
 * With `allowLonger`, a tensor mask may have more columns (a preallocated KV cache's full capacity).
 */
export function keyPaddingMask(
  mask: number[][] | Tensor | undefined,
  [batch, length]: [number, number],
  label: string,
  allowLonger = false,
): KeyPaddingMask {
  if (!mask) return {};
  if (Array.isArray(mask)) {
    if (mask.length !== batch || mask.some((row) => row.length !== length)) {
      throw new Error(`${label}: attentionMask must be [${batch}, ${length}]`);
    }
    return { tensor: tensor(mask.flat(), [batch, length], "i32"), rows: mask };
  }
  const columnsOk = allowLonger ? mask.shape[1] >= length : mask.shape[1] === length;
  if (mask.ndim !== 2 || mask.shape[0] !== batch || !columnsOk) {
    throw new Error(`${label}: attentionMask must be [${batch}, ${length}], got [${mask.shape}]`);
  }
  return { tensor: mask };
}

/** Position ids `start, start + 1, …` for every row: i32 [batch, length]. */
export function rangePositionIds(batch: number, length: number, start = 0): Tensor {
  return tensor(Array.from({ length: batch * length }, (_, i) => start + i % length), [batch, length], "i32");
}

/** Real tokens up to and including each position of a mask row (the running count of its nonzero entries). */
function tokensSoFar(row: number[]): number[] {
  let count = 0;
  return row.map((flag) => count += flag ? 1 : 0);
}

/** Position ids from an attention mask: cumsum(mask) − 1, with padding positions set to 1 (as HF generate). */
export function positionIdsFromMask(mask: number[][], pastLength = 0, length?: number): number[][] {
  return mask.map((row) => {
    const counts = tokensSoFar(row);
    const positions = row.map((flag, i) => flag ? counts[i] - 1 : 1);
    return positions.slice(pastLength, length === undefined ? undefined : pastLength + length);
  });
}

/** RoBERTa's position ids from an attention mask: padding_idx + the running count of real tokens; padding keeps padding_idx. */
export function positionIdsAfterPadding(mask: number[][], paddingIdx: number): number[][] {
  return mask.map((row) => {
    const counts = tokensSoFar(row);
    return row.map((flag, i) => flag ? paddingIdx + counts[i] : paddingIdx);
  });
}
