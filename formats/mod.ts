/**
 * Checkpoint file formats on host memory: safetensors (read, write, sharded folders), model folders, PyTorch checkpoints
 * (`pytorch_model.bin`: zip + a restricted pickle reader that never executes anything), atomic file writes and the
 * host tensor type they share. Nothing here touches the GPU.
 * @module
 */

export * from "./safetensors.ts";
export {
  type FolderWeights,
  loadSafetensorsDir,
  MODEL_WEIGHT_FILES,
  readModelFolder,
  type ReadModelFolderOptions,
  SAFETENSORS_WEIGHT_FILES,
} from "./model_folder.ts";
export {
  parseTorchCheckpoint,
  readTorchCheckpoint,
  TorchCheckpointError,
  type TorchCheckpointOptions,
} from "./torch_checkpoint.ts";
export { exists, writeFileAtomic, writeJsonAtomic } from "./fs_atomic.ts";
export { type HostTensor, shapeSize } from "./host_tensor.ts";
