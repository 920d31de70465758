// FFT: every backbone weight trains (Code_Uncached/scripts/run_fft.py: fine_tune_to 'all', recsys lr 1e-4).
import { FINE_TUNING_DEFAULTS, fineTuningMethod } from './fine-tuning.ts'

export const fft = fineTuningMethod({
  name: 'fft',
  label: 'FFT',
  summary: 'full fine-tuning: every weight of BERT and ViT trains with the recommender (the paper\'s most expensive baseline)',
  defaults: { ...FINE_TUNING_DEFAULTS, lrUser: 1e-4 },
  paramGroups: { textEncoder: 'every BERT weight', imageEncoder: 'every ViT weight' },
  tuning: () => ({ kind: 'full' }),
  // every weight trains: at base size (196 M weights) weights, gradients and Adam's m and v on the
  // heap are 3.1 GB of the wasm32 heap's 4 GB, and the second step (the first with slots) ran out
  optimizerSlots: 'host',
})
