/**
 * All tensor ops, each with its backward: element-wise math, matmul, reductions, softmax,
 * losses, normalisation, attention, dropout, shape and indexing ops.
 * @module
 */

export * from "./elementwise.ts";
export * from "./matmul.ts";
export * from "./reduce.ts";
export * from "./softmax.ts";
export * from "./loss.ts";
export * from "./norm.ts";
export * from "./attention.ts";
export * from "./dropout.ts";
export * from "./shape.ts";
export * from "./index_ops.ts";
export * from "./heads.ts";
export * from "./finite.ts";
