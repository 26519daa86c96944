/**
 * The CPU kernels: importing this module registers every family's CPU implementation in the kernel table
 * (`kernel_table.ts`).
 * @module
 */

import "./kernels/attention.ts";
import "./kernels/elementwise.ts";
import "./kernels/heads.ts";
import "./kernels/indexing.ts";
import "./kernels/loss.ts";
import "./kernels/matmul.ts";
import "./kernels/optim.ts";
import "./kernels/random.ts";
import "./kernels/reduce.ts";
import "./kernels/sampling.ts";

export { cpuKernelOf, defineCpuKernel, type HostArray, hostArray, unpackParams } from "./kernel_table.ts";
