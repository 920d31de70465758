// LoRA on the query and value projections of every attention layer of both backbones, with
// loralib's semantics (Code_Uncached/scripts/run_lora.py: r = 8, loralib's default α = 1, so the
// update is scaled by α / r).
import { Type } from '@sinclair/typebox'
import { FINE_TUNING_DEFAULTS, fineTuningMethod } from './fine-tuning.ts'

export const lora = fineTuningMethod({
  name: 'lora',
  label: 'LoRA',
  summary: 'LoRA: low-rank updates of the query and value projections of BERT and ViT; the backbones stay frozen',
  configProperties: {
    loraRank: Type.Integer({ minimum: 1, maximum: 1024, description: 'r, the rank of the update (run_lora.py: 8)' }),
    loraAlpha: Type.Number({ exclusiveMinimum: 0, maximum: 4096, description: 'α; the update is scaled by α / r (loralib default 1)' }),
  },
  defaults: { ...FINE_TUNING_DEFAULTS, lrUser: 2e-4, lrTextAdapters: 4e-4, lrImageAdapters: 4e-4, loraRank: 8, loraAlpha: 1 },
  paramGroups: { textAdapters: "BERT's LoRA A and B", imageAdapters: "ViT's LoRA A and B" },
  tuning: (s) => ({ kind: 'lora', rank: (s.loraRank as number | undefined) ?? 8, alpha: (s.loraAlpha as number | undefined) ?? 1 }),
})
