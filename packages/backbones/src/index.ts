// Frozen backbones for IISAN: BERT (text) and ViT (image) from Hugging Face checkpoint folders,
// returning every layer's hidden states. Shapes: L = config.numLayers, d = config.hiddenSize;
// "per layer" always means L + 1 entries with layer 0 = the embedding output.
export { loadTextBackbone, TextBackbone, type TextBackboneOptions, type TextEncoding, type TextHiddenStates, type EncodeOptions } from './text-backbone.ts'
export { loadImageBackbone, ImageBackbone, type ImageEncoding, type ImageHiddenStates, type ImageEncodeOptions, type ImageBackboneOptions } from './image-backbone.ts'
export { fingerprintBackbone, computeFingerprint, describeBackbone } from './fingerprint.ts'
export { ensureDefaultBackbones, makeDefaultBackbones, DEFAULT_BACKBONE_DIR, type DefaultBackbonePaths } from './default.ts'
export {
  readModelConfig,
  readImagePreprocessConfig,
  BackboneConfigError,
  type BertConfig,
  type VitConfig,
  type ModelConfig,
  type ImagePreprocessConfig,
  type ResampleFilter,
} from './config.ts'
export { Checkpoint, CheckpointError, canonicalName, type CheckpointOptions, type TensorSpec } from './checkpoint.ts'
export { BertTokenizer, DEFAULT_MAX_LENGTH, lengthOrder, rowLengths, selectRows, type TextBatch, type TokenizerDescriptor } from './tokenizer.ts'
export { decodeImage, resizePillow, toPixelValues, prepareImage, ImageInputError, type RgbImage, type ImageInput, type PreparedImage } from './image.ts'
export { ensureBackend } from './backend.ts'
export { BACKBONE_RUNTIMES, requestedRuntime, type BackboneRuntimeName } from './onnx/onnx-runtime.ts'
export { mapLimit } from './map-limit.ts'
export { BertModel, bertTensorSpecs } from './bert.ts'
export { VitModel, vitTensorSpecs, patchify } from './vit.ts'
export {
  TrainableBert,
  TrainableVit,
  type BackboneTuning,
  type BackboneOutput,
  type DropoutRates,
  type ForwardOptions,
  type NamedWeight,
  type TrainableOptions,
  type TrainableWeight,
  type WeightReader,
  type WeightRole,
} from './trainable.ts'
