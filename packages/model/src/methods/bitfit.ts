// BitFit: only the backbones' biases train (Code_Uncached/scripts/run_bitfit.py; run.py marks every
// "bias" inside mm_encoder trainable, and its name rules put them in the backbones' own groups).
import { FINE_TUNING_DEFAULTS, fineTuningMethod } from './fine-tuning.ts'

export const bitfit = fineTuningMethod({
  name: 'bitfit',
  label: 'BitFit',
  summary: 'BitFit: only the biases of BERT and ViT train',
  defaults: { ...FINE_TUNING_DEFAULTS, lrUser: 2e-4 },
  paramGroups: { textEncoder: "BERT's biases", imageEncoder: "ViT's biases" },
  tuning: () => ({ kind: 'bitfit' }),
})
