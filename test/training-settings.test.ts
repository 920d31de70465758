// A job's settings come from one place, defaultTrainingConfig: the API stores them, the CLI and
// the worker train with them. A key only other methods read is accepted and dropped there, so no
// caller has to filter it out itself.
import { describe, expect, it } from 'vitest'
import { METHODS, TrainingConfigSchema, configKeysOf, defaultTrainingConfig, getMethod } from '@iisan/model'

describe('defaultTrainingConfig', () => {
  it("drops a key only another method reads (IISAN's reduction given to fft), keeps shared and own keys", () => {
    const fft = defaultTrainingConfig(getMethod('fft'), { reduction: 4, modality: 'intra', loraRank: 2, batchSize: 16 })
    expect(fft).not.toHaveProperty('reduction')
    expect(fft).not.toHaveProperty('modality')
    expect(fft).not.toHaveProperty('loraRank')
    expect(fft).toMatchObject({ batchSize: 16, lrUser: 1e-4 })
    expect(defaultTrainingConfig(getMethod('iisan'), { reduction: 4, loraRank: 2 })).toMatchObject({ reduction: 4, modality: 'intra_inter' })
    expect(defaultTrainingConfig(getMethod('iisan'), { loraRank: 2 })).not.toHaveProperty('loraRank')
  })

  it('holds exactly the keys its method reads (configKeysOf), given every schema key', () => {
    // every method's defaults, plus sideLayers (its default depends on the backbone's depth)
    const everything = { ...Object.fromEntries(METHODS.flatMap((m) => Object.entries(defaultTrainingConfig(m)))), sideLayers: [0, 2] }
    expect(Object.keys(everything).sort()).toEqual(Object.keys(TrainingConfigSchema.properties).sort())
    for (const m of METHODS) expect(Object.keys(defaultTrainingConfig(m, everything)).sort()).toEqual([...configKeysOf(m)].sort())
  })
})
