// The method registry: one contract for every method, the paper's defaults per method, the same
// numbers as before the registry for the two methods that existed, and uncached IISAN equal to
// cached IISAN.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  METHODS,
  SequentialRecommender,
  TrainingConfigSchema,
  buildProtocol,
  createOptimizers,
  defaultTrainingConfig,
  getMethod,
  iisanConfig,
  initBackend,
  logProbabilities,
  mulberry32,
  sasRecIdConfig,
  tf,
  train,
  trainStep,
  type CachedStates,
  type ModalityStates,
} from '@iisan/model'
import { bertHfConfig, demoVocabText, vitHfConfig, writeRandomBert, writeRandomVit } from '@iisan/backbones/default'
import { loadTextBackbone } from '@iisan/backbones'
import { float32ToFloat16 } from '@iisan/safetensors'
import { loadItemContent } from '@iisan/pipeline/training/item-content'

beforeAll(async () => {
  await initBackend({ prefer: 'wasm' })
})

describe('the registry', () => {
  it('holds every method of the paper once, each with its own settings in the one schema', () => {
    expect(METHODS.map((m) => m.name)).toEqual(['sasrec-id', 'iisan', 'iisan-uncached', 'fft', 'adapter', 'lora', 'bitfit'])
    // the names tables and charts print (bench:serve's rows), as the paper writes them
    expect(METHODS.map((m) => m.label)).toEqual(['ID-SASRec', 'IISAN', 'IISAN (uncached)', 'FFT', 'Adapter', 'LoRA', 'BitFit'])
    const keys = Object.keys(TrainingConfigSchema.properties)
    for (const m of METHODS) for (const key of Object.keys(m.configProperties)) expect(keys).toContain(key)
    expect(() => getMethod('ffft')).toThrow(/unknown method "ffft" \(available: sasrec-id, iisan, iisan-uncached, fft, adapter, lora, bitfit\)/)
  })

  it("completes a job's settings with its method's paper values (Code_Cached / Code_Uncached scripts)", () => {
    const of = (name: string) => defaultTrainingConfig(getMethod(name))
    expect(of('iisan')).toMatchObject({ batchSize: 64, lrUser: 2e-4, lrTextEncoder: 5e-5, lrImageEncoder: 1e-4, lrTextAdapters: 1e-4, lrImageAdapters: 1e-4, reduction: 64, modality: 'intra_inter' })
    expect(of('iisan-uncached')).toMatchObject({ batchSize: 64, lrTextAdapters: 1e-4, reduction: 64 })
    expect(of('fft')).toMatchObject({ batchSize: 32, lrUser: 1e-4, lrTextEncoder: 5e-5, lrImageEncoder: 1e-4 })
    expect(of('adapter')).toMatchObject({ batchSize: 32, lrUser: 2e-4, lrTextAdapters: 4e-4, lrImageAdapters: 4e-4, adapterBottleneck: 64 })
    expect(of('lora')).toMatchObject({ batchSize: 32, lrUser: 2e-4, lrTextAdapters: 4e-4, loraRank: 8, loraAlpha: 1 })
    expect(of('bitfit')).toMatchObject({ batchSize: 32, lrUser: 2e-4, lrTextEncoder: 5e-5, lrImageEncoder: 1e-4 })
    expect(of('sasrec-id')).toMatchObject({ batchSize: 64, lrItem: 1e-4, lrUser: 2e-4 })
    // shared keys: the authors' model selection for everyone; what the user gives wins
    for (const m of METHODS) expect(defaultTrainingConfig(m, { patience: 3 })).toMatchObject({ maxEpochs: 100, patience: 3, selectBy: 'hr10', embeddingDim: 64, maxSeqLen: 10 })
  })
})

describe('moving ID-SASRec and IISAN onto the registry changed no result', () => {
  // Printed by the same script on commit 39fec76 (before the registry), on wasm: three epochs of
  // each method on 120 random users over 40 items, seed 4 / shuffle seed 2.
  const BEFORE = {
    'sasrec-id': { losses: [4.383876174688339, 4.3329998254776, 4.276344865560532], val: { hr10: 0.21666666666666667, ndcg10: 0.1079339179133271 }, test: { hr10: 0.16666666666666666, ndcg10: 0.0927344343731265 } },
    iisan: { losses: [4.17325434088707, 4.141247540712357, 4.129799872636795], val: { hr10: 0.19166666666666668, ndcg10: 0.0723062064219583 }, test: { hr10: 0.175, ndcg10: 0.06797296889846145 } },
  }
  const random = mulberry32(5)
  const users = Array.from({ length: 120 }, (_, u) => ({ key: `u${u}`, items: Array.from({ length: 7 }, () => String(1 + Math.floor(random() * 40))) }))
  const data = buildProtocol(users, Array.from({ length: 40 }, (_, i) => String(i + 1)), { maxSeqLen: 5, minInteractions: 5 })
  const opts = { maxEpochs: 3, batchSize: 16, patience: 3, seed: 2, lrItem: 1e-3, lrUser: 1e-3, lrTextEncoder: 1e-3, lrImageEncoder: 1e-3, lrTextAdapters: 1e-3, lrImageAdapters: 1e-3 }
  const states = (n: number, L: number, d: number, seed: number): ModalityStates => {
    const r = mulberry32(seed)
    return { numLayers: L, width: d, data: Float32Array.from({ length: n * (L + 1) * d }, () => r() * 2 - 1), rowOf: Int32Array.from({ length: n + 1 }, (_, i) => i - 1) }
  }
  const userEncoder = { embeddingDim: 16, numBlocks: 1, numHeads: 2, maxSeqLen: 5, seed: 4 }

  async function expectBefore(model: SequentialRecommender, before: (typeof BEFORE)['iisan']) {
    const result = await train(model, data, opts)
    result.epochs.forEach((e, i) => expect(Math.abs(e.trainLoss - before.losses[i])).toBeLessThan(1e-5))
    expect(result.validation).toMatchObject(before.val)
    expect(result.test).toMatchObject(before.test)
    model.dispose()
  }

  it('ID-SASRec', async () => {
    await expectBefore(new SequentialRecommender(sasRecIdConfig(data.numItems, userEncoder)), BEFORE['sasrec-id'])
  })

  it('IISAN', async () => {
    const config = iisanConfig(data.numItems, { numLayers: 4, width: 12 }, { numLayers: 4, width: 8 }, { ...userEncoder, reduction: 4 })
    await expectBefore(new SequentialRecommender(config, { states: { text: states(data.numItems, 4, 12, 7), image: states(data.numItems, 4, 8, 8) } }), BEFORE.iisan)
  })
})

describe('uncached IISAN equals cached IISAN', () => {
  let dir: string
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iisan-uncached-'))
    const shape = { hidden_size: 16, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 32 }
    writeRandomBert(path.join(dir, 'bert'), bertHfConfig({ ...shape, max_position_embeddings: 64 }), demoVocabText(), 'registry-bert')
    writeRandomVit(path.join(dir, 'vit'), vitHfConfig({ ...shape, image_size: 32, patch_size: 16 }), 'registry-vit')
  })
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }))

  it('gives the same loss, within 1e-5, for three steps from the same seed; only the states source differs', async () => {
    const words = ['digital', 'caliper', 'pipette', 'beaker', 'gloves', 'microscope', 'slide', 'funnel', 'thermometer', 'scale']
    const numItems = 30
    const titles = ['', ...Array.from({ length: numItems }, (_, i) => `${words[i % 10]} ${words[(i * 3 + 1) % 10]} ${i}`)]
    const random = mulberry32(8)
    const users = Array.from({ length: 40 }, (_, u) => ({ key: `u${u}`, items: Array.from({ length: 7 }, () => String(1 + Math.floor(random() * numItems))) }))
    const data = buildProtocol(users, Array.from({ length: numItems }, (_, i) => String(i + 1)), { maxSeqLen: 5, minInteractions: 5 })
    const protocolTitles = data.itemKeys.map((key) => (key ? titles[Number(key)] : ''))

    // the cache's way: the text backbone encodes every title once, the states are stored as float16
    const text = await loadTextBackbone(path.join(dir, 'bert'))
    const encoded = await text.encodeTexts(protocolTitles.slice(1))
    const cachedText: ModalityStates = { numLayers: 2, width: 16, data: float32ToFloat16(encoded.clsPerLayer), rowOf: Int32Array.from({ length: data.numItems + 1 }, (_, i) => i - 1) }
    text.dispose()
    const noImages: ModalityStates = { numLayers: 2, width: 16, data: new Uint16Array(0), rowOf: new Int32Array(data.numItems + 1).fill(-1) }
    const cachedStates: CachedStates = { text: cachedText, image: noImages }

    const loaded = await loadItemContent({ titles: protocolTitles }, { text: path.join(dir, 'bert'), image: path.join(dir, 'vit') })
    const settings = { ...defaultTrainingConfig(getMethod('iisan')), embeddingDim: 8, numBlocks: 1, numHeads: 2, maxSeqLen: 5, reduction: 4, seed: 6 }
    const cached = getMethod('iisan')
    const uncached = getMethod('iisan-uncached')
    const cachedInputs = { states: cachedStates }
    const uncachedInputs = { content: loaded.content, backbones: loaded.backbones }
    const models = [
      new SequentialRecommender(cached.modelConfig(data.numItems, settings, cachedInputs), cachedInputs),
      new SequentialRecommender(uncached.modelConfig(data.numItems, settings, uncachedInputs), uncachedInputs),
    ]
    expect(models[0].params.count()).toBe(models[1].params.count())
    const logProb = logProbabilities(data.trainCounts)
    const losses = models.map((model) => {
      const optimizers = createOptimizers(settings, model.params.groups())
      const batchRandom = mulberry32(3)
      const out = Array.from({ length: 3 }, () => trainStep(model, optimizers, Array.from({ length: 16 }, () => data.trainWindows[Math.floor(batchRandom() * data.trainWindows.length)]), logProb))
      Object.values(optimizers).forEach((o) => o!.dispose())
      return out
    })
    losses[0].forEach((loss, i) => expect(Math.abs(loss - losses[1][i])).toBeLessThan(1e-5))
    // and the trained parameters agree
    const [a, b] = models.map((m) => m.params.snapshot())
    for (const [name, { values }] of a) values.forEach((v, i) => expect(Math.abs(v - b.get(name)!.values[i])).toBeLessThan(1e-5))
    const before = tf.memory().numTensors
    models.forEach((m) => m.dispose())
    expect(tf.memory().numTensors).toBeLessThan(before)
  })
})
