/**
 * Bit-level conversions between numbers and the 16-bit float formats IEEE binary16 (float16) and bfloat16, as
 * stored in F16 / BF16 safetensors files.
 * @module
 */

// Scratch views for bit-level float conversions.
const scratchF32 = new Float32Array(1);
const scratchU32 = new Uint32Array(scratchF32.buffer);

/**
 * Converts IEEE binary16 bits to the (exactly representable) number, including subnormals, ±0, ±Infinity and NaN.
 * @param bits The 16-bit pattern (0..65535).
 * @returns The value as a number.
 */
export function float16BitsToFloat32(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exp = (bits >> 10) & 0x1f;
  const mant = bits & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  return sign * (1024 + mant) * 2 ** (exp - 25);
}

/**
 * Converts a number to IEEE binary16 bits: first to float32, then round-to-nearest-even to half precision.
 * Values beyond the half range become ±Infinity; NaN becomes a quiet NaN.
 * @param value The number to convert.
 * @returns The 16-bit pattern (0..65535).
 */
export function float32ToFloat16Bits(value: number): number {
  scratchF32[0] = value;
  const b = scratchU32[0];
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  const mant = b & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 | (mant >>> 13) : 0);
  const e = exp - 112; // rebias 127 -> 15
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign; // below half of the smallest subnormal: rounds to ±0
    const full = mant | 0x800000;
    const shift = 14 - e;
    let k = full >>> shift;
    const rem = full & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    if (rem > halfway || (rem === halfway && (k & 1))) k++;
    return sign | k;
  }
  let h = sign | (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1))) h++; // a carry correctly rolls into the exponent / Infinity
  return h;
}

/**
 * Converts a number to bfloat16 bits (the high half of its float32 pattern) with round-to-nearest-even.
 * @param value The number to convert.
 * @returns The 16-bit pattern (0..65535).
 */
export function float32ToBfloat16Bits(value: number): number {
  scratchF32[0] = value;
  const b = scratchU32[0];
  if ((b & 0x7f800000) === 0x7f800000 && (b & 0x7fffff)) return (b >>> 16) | 0x40;
  return ((b + 0x7fff + ((b >>> 16) & 1)) / 0x10000) >>> 0;
}
