// What a training job reports while it runs (stored on its row, forwarded by the worker to the
// queue). The job and the loaders of its inputs (cache-states.ts, item-content.ts) report it.
export interface JobProgress {
  phase: 'loading' | 'caching' | 'training' | 'evaluating' | 'saving' | 'done'
  /** while caching: items with cached states / items */
  cached?: number
  total?: number
  epoch?: number
  maxEpochs?: number
  step?: number
  stepsPerEpoch?: number
  loss?: number
  valHr10?: number
  valNdcg10?: number
  stepsPerSecond?: number
  /** what a person should know now, e.g. that the embedding cache is unreachable and being retried */
  message?: string
  /** set when this attempt carried on from a checkpoint of an earlier one */
  resumedFromEpoch?: number
  /** what limits this model whatever the numbers say, e.g. that the demo backbones are in use; kept on every report */
  warnings?: string[]
  /** the modalities whose backbone is the demo pair (the reason for the warning) */
  demoBackbones?: string[]
  /** 0..1 over the maximum number of epochs (early stopping may finish sooner) */
  fraction: number
}
