// Tiny random BERT and ViT (d 16, 2 layers; BERT vocab 50; ViT 32×32 images) and the fine-tuning
// baselines' models on them, shared by the tests that train those baselines on wasm and cpu
// (two-pass-step.test.ts, host-adam.test.ts).
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { afterAll, beforeAll } from 'vitest'
import { SequentialRecommender, defaultTrainingConfig, getMethod, initBackend, patchWasmKernels, tf, type MethodInputs } from '@iisan/model'
import { Checkpoint, readModelConfig, type BertConfig, type VitConfig } from '@iisan/backbones'
import { bertHfConfig, vitHfConfig, writeRandomBert, writeRandomVit } from '@iisan/backbones/default'
import { tinyItemContent } from '../tiny-item-content.ts'

const SHAPE = { hidden_size: 16, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 32 }
/** title length in tokens (tinyItemContent's titles are 3–5) */
const SEQ = 5

/**
 * For a test file: a temporary folder that holds the pair from before its tests (with the wasm
 * and cpu backends loaded) until after them. `seed` makes the random weights.
 */
export function tinyBackbonesFolder(seed: string): string {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), `iisan-${seed}-`))
  beforeAll(async () => {
    await initBackend({ prefer: 'wasm' })
    await import('@tensorflow/tfjs-backend-cpu')
    writeTinyBackbones(root, seed)
  })
  afterAll(() => fs.rmSync(root, { recursive: true, force: true }))
  return root
}

function writeTinyBackbones(root: string, seed: string): void {
  const vocab = Array.from({ length: 50 }, (_, i) => `tok${i}`).join('\n') + '\n'
  writeRandomBert(path.join(root, 'bert'), bertHfConfig({ ...SHAPE, vocab_size: 50, max_position_embeddings: 16 }), vocab, seed)
  writeRandomVit(path.join(root, 'vit'), vitHfConfig({ ...SHAPE, image_size: 32, patch_size: 16 }), seed)
}

/**
 * A fine-tuning baseline's model over items 1..numItems of tinyItemContent (images for every
 * third item) on the pair in root: a one-block user encoder of width 8, and 15 tokens per backbone
 * forward (3 titles of 5 tokens, or 3 images of 4 patches + [CLS]), so a batch's items make
 * several chunks of each.
 */
export function tinyFineTuningModel(root: string, method: string, numItems: number, settings: Record<string, unknown> = {}): SequentialRecommender {
  const inputs: MethodInputs = {
    content: tinyItemContent(numItems, SEQ, [3, 6, 9, 12]),
    backbones: {
      text: { config: readModelConfig(path.join(root, 'bert')) as BertConfig, checkpoint: Checkpoint.open(path.join(root, 'bert'), 'bert') },
      image: { config: readModelConfig(path.join(root, 'vit')) as VitConfig, checkpoint: Checkpoint.open(path.join(root, 'vit'), 'vit') },
    },
  }
  const all = { ...defaultTrainingConfig(getMethod(method)), embeddingDim: 8, numBlocks: 1, numHeads: 2, maxSeqLen: 4, seed: 6, ...settings }
  return new SequentialRecommender({ ...getMethod(method).modelConfig(numItems, all, inputs), stepTokens: 15 } as never, inputs)
}

/** Switches tfjs to the backend (wasm with the project's kernels: patchWasmKernels). */
export async function useBackend(name: 'wasm' | 'cpu'): Promise<void> {
  await tf.setBackend(name)
  await tf.ready()
  if (name === 'wasm') patchWasmKernels()
}
