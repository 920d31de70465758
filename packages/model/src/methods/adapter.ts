// Houlsby adapters after the attention output and after the FFN output of every layer of both
// backbones (Code_Uncached/scripts/run_adapter.py: bottleneck 64, adapters at 4e-4).
import { Type } from '@sinclair/typebox'
import { FINE_TUNING_DEFAULTS, fineTuningMethod } from './fine-tuning.ts'

export const adapter = fineTuningMethod({
  name: 'adapter',
  label: 'Adapter',
  summary: 'Houlsby adapters inside every layer of BERT and ViT; the backbones stay frozen',
  configProperties: { adapterBottleneck: Type.Integer({ minimum: 1, maximum: 4096, description: 'adapter bottleneck width (run_adapter.py: 64)' }) },
  defaults: { ...FINE_TUNING_DEFAULTS, lrUser: 2e-4, lrTextAdapters: 4e-4, lrImageAdapters: 4e-4, adapterBottleneck: 64 },
  paramGroups: { textAdapters: "BERT's adapters", imageAdapters: "ViT's adapters" },
  // AdapterBlock builds a dropout it never applies, so there is none here either
  tuning: (s) => ({ kind: 'adapter', bottleneck: (s.adapterBottleneck as number | undefined) ?? 64, dropout: 0 }),
})
