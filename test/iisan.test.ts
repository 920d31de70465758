import { beforeAll, describe, expect, it } from 'vitest'
import {
  Params,
  SequentialRecommender,
  ServingModel,
  addSanb,
  addTower,
  buildProtocol,
  gates,
  iisanConfig,
  initBackend,
  interTower,
  intraTower,
  linearPair,
  sanbRelu,
  modalityFromItems,
  mulberry32,
  sanb,
  saveCheckpoint,
  tf,
  train,
  type CachedStates,
} from '@iisan/model'

beforeAll(async () => {
  await initBackend({ prefer: 'wasm' })
})

const arr = (t: tf.Tensor) => Array.from(t.dataSync())

describe('SAN blocks against hand computations', () => {
  it('a gate starts at 0.5 and follows sigmoid(θ / 0.1)', () => {
    expect(arr(gates(tf.zeros([3])))).toEqual([0.5, 0.5, 0.5])
    const g = arr(gates(tf.tensor1d([0.1, -0.2])))
    expect(g[0]).toBeCloseTo(1 / (1 + Math.exp(-1)), 6)
    expect(g[1]).toBeCloseTo(1 / (1 + Math.exp(2)), 6)
  })

  it('a SANB with zero up-projection is the identity; otherwise x + W_up·relu(W_down·x + b_down) + b_up', () => {
    const params = new Params(1)
    const block = addSanb(params, 'b', 3, 2, 'textAdapters')
    const x = tf.tensor2d([[1, -2, 0.5]])
    params.get('b.up.w').assign(tf.zeros([2, 3]))
    expect(arr(sanb(block, x, 'relu'))).toEqual([1, -2, 0.5])

    params.get('b.down.w').assign(tf.tensor2d([[1, 0], [0, 1], [1, 1]]))
    params.get('b.down.b').assign(tf.tensor1d([0, 0.5]))
    params.get('b.up.w').assign(tf.tensor2d([[1, 0, 0], [0, 2, 0]]))
    params.get('b.up.b').assign(tf.tensor1d([0, 0, 1]))
    // down: [1 + 0.5, -2 + 0.5 + 0.5] = [1.5, -1] → relu [1.5, 0] → up [1.5, 0, 0] + b_up [0, 0, 1]
    expect(arr(sanb(block, x, 'relu'))).toEqual([1 + 1.5, -2, 0.5 + 1])
    // GELU variant: gelu(−1) = −0.15865525…, up adds 2·gelu(−1) to x[1]
    const g = arr(sanb(block, x, 'gelu'))
    expect(g[1]).toBeCloseTo(-2 + 2 * -0.15865525393145707, 5)
    params.dispose()
  })

  it('intra and inter towers follow the recurrences on two layers', () => {
    const d = 2
    const D = 2
    const params = new Params(1)
    const groups = { gate: 'recsys', sanbs: 'textAdapters', F: 'textEncoder' } as const
    const t = addTower(params, { name: 't', width: d, numSideLayers: 2, reduction: 1, groups }, D)
    const crossTower = addTower(params, { name: 'x', width: d, numSideLayers: 2, reduction: 1, groups }, D)
    for (const name of ['t', 'x']) {
      // SANB_1 = identity, SANB_2 adds b_up = [1, 1]; F = P = identity; gate θ = [0, 0.1]
      for (const k of [0, 1]) params.get(`${name}.sanb${k}.up.w`).assign(tf.zeros([1, d]))
      params.get(`${name}.sanb1.up.b`).assign(tf.tensor1d([1, 1]))
      params.get(`${name}.gate`).assign(tf.tensor1d([0, 0.1]))
      params.get(`${name}.F.w`).assign(tf.eye(d))
      params.get(`${name}.P.w`).assign(tf.eye(d))
      params.get(`${name}.F.b`).assign(tf.zeros([d]))
      params.get(`${name}.P.b`).assign(tf.zeros([D]))
    }
    const g2 = 1 / (1 + Math.exp(-1))
    const h1 = [2, 4]
    const h2 = [10, -6]
    const text = [tf.tensor2d([h1]), tf.tensor2d([h2])]
    // intra: prev1 = 0.5·h1; prev2 = g2·h2 + (1 − g2)·prev1 + [1, 1]
    const intra = arr(intraTower(t, text, 'relu'))
    const expectIntra = [0, 1].map((i) => g2 * h2[i] + (1 - g2) * 0.5 * h1[i] + 1)
    intra.forEach((v, i) => expect(v).toBeCloseTo(expectIntra[i], 5))
    // inter: prev1 = 0.5·i1 + 0.5·t1; prev2 = prev1 + g2·i2 + (1 − g2)·t2 + [1, 1]
    const i1 = [1, 1]
    const i2 = [-3, 5]
    const image = [tf.tensor2d([i1]), tf.tensor2d([i2])]
    const inter = arr(interTower(crossTower, text, image, 'relu'))
    const expectInter = [0, 1].map((i) => 0.5 * i1[i] + 0.5 * h1[i] + g2 * i2[i] + (1 - g2) * h2[i] + 1)
    inter.forEach((v, i) => expect(v).toBeCloseTo(expectInter[i], 5))
    params.dispose()
  })
})

/** Synthetic cached states: item j's text state encodes j (a random vector), images for even items only. */
function syntheticStates(numItems: number, L: number, dText: number, dImage: number, seed: number, randomize = false): CachedStates {
  const random = mulberry32(seed)
  const vec = (n: number) => Float32Array.from({ length: n }, () => random() * 2 - 1)
  const text = Array.from({ length: numItems }, () => vec((L + 1) * dText))
  const image = Array.from({ length: numItems }, (_, i) => ((i + 1) % 2 === 0 ? vec((L + 1) * dImage) : null))
  if (randomize) text.reverse()
  return { text: modalityFromItems(L, dText, text), image: modalityFromItems(L, dImage, image) }
}

describe('hand-written gradients', () => {
  it('the ReLU SANB and the F→P pair equal autodiff of their layer-by-layer form', () => {
    const random = mulberry32(4)
    const t = (...shape: number[]) => tf.tensor(Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => random() * 2 - 1), shape)
    const [x, wD, bD, wU, bU, wF, bF, wP, bP] = [t(6, 5), t(5, 3), t(3), t(3, 5), t(5), t(5, 5), t(5), t(5, 2), t(2)]
    const probe = t(6, 5)
    const probeOut = t(6, 2)
    const plainSanb = (...a: tf.Tensor[]) => tf.add(a[0], tf.add(tf.matMul(tf.relu(tf.add(tf.matMul(a[0], a[1]), a[2])), a[3]), a[4]))
    const lossOf = (f: (...a: tf.Tensor[]) => tf.Tensor, weights: tf.Tensor) => (...a: tf.Tensor[]) => tf.sum(tf.mul(f(...a), weights))
    const custom = tf.grads(lossOf((...a) => sanbRelu(...(a as [tf.Tensor2D, tf.Tensor2D, tf.Tensor1D, tf.Tensor2D, tf.Tensor1D])), probe))([x, wD, bD, wU, bU])
    const plain = tf.grads(lossOf(plainSanb, probe))([x, wD, bD, wU, bU])
    custom.forEach((g, i) => Array.from(g.dataSync()).forEach((v, j) => expect(v).toBeCloseTo(plain[i].dataSync()[j], 4)))
    const plainPair = (...a: tf.Tensor[]) => tf.add(tf.matMul(tf.add(tf.matMul(a[0], a[1]), a[2]), a[3]), a[4])
    const customPair = tf.grads(lossOf((...a) => linearPair(...(a as [tf.Tensor2D, tf.Tensor2D, tf.Tensor1D, tf.Tensor2D, tf.Tensor1D])), probeOut))([x, wF, bF, wP, bP])
    const plainPairGrads = tf.grads(lossOf(plainPair, probeOut))([x, wF, bF, wP, bP])
    customPair.forEach((g, i) => Array.from(g.dataSync()).forEach((v, j) => expect(v).toBeCloseTo(plainPairGrads[i].dataSync()[j], 4)))
  })
})

describe('IISAN gradient', () => {
  it('matches finite differences through the SAN and the fusion layer', async () => {
    // The cpu backend for this check only: it is deterministic to the last bit, so central
    // differences in float32 are meaningful at ε = 1e-2 on a smooth (GELU) configuration.
    await import('@tensorflow/tfjs-backend-cpu')
    await tf.setBackend('cpu')
    try {
      const states = syntheticStates(6, 2, 4, 3, 5)
      const config = iisanConfig(6, { numLayers: 2, width: 4 }, { numLayers: 2, width: 3 }, { embeddingDim: 4, reduction: 2, activation: 'gelu', sideLayers: [0, 1, 2], maxSeqLen: 3, numHeads: 1 })
      const model = new SequentialRecommender(config, { states })
      // bigger SANB weights than the 0.01 init so that every path carries signal
      for (const [name, v] of model.params.entries()) if (name.includes('.w') && name.startsWith('san')) v.assign(tf.mul(v, 30))
      const ids = Int32Array.from([1, 2, 3, 4, 5, 2])
      const target = tf.tensor2d(Array.from({ length: 6 * 4 }, (_, i) => Math.sin(i)), [6, 4])
      const loss = () => tf.sum(tf.mul(model.itemEncoder.embed(ids, true), target)) as tf.Scalar
      const { grads } = tf.variableGrads(loss)
      const checked = ['san.text.sanb0.down.w', 'san.image.sanb1.up.w', 'san.inter.gate', 'san.text.gate', 'san.missing.image', 'san.align.image', 'san.inter.F.w', 'fusion.w']
      for (const name of checked) {
        const v = model.params.get(name)
        const g = grads[v.name].dataSync()
        const values = v.dataSync().slice()
        for (const i of [0, Math.floor(values.length / 2), values.length - 1]) {
          const eps = 1e-2
          const at = (delta: number) => {
            const copy = values.slice()
            copy[i] += delta
            v.assign(tf.tensor(copy, v.shape))
            return tf.tidy(() => loss().dataSync()[0])
          }
          const numeric = (at(eps) - at(-eps)) / (2 * eps)
          v.assign(tf.tensor(values, v.shape))
          const tolerance = Math.max(2e-2, Math.abs(numeric) * 1e-2)
          expect({ name, i, error: Math.abs(g[i] - numeric) <= tolerance ? 'ok' : `${g[i]} vs ${numeric}` }).toEqual({ name, i, error: 'ok' })
        }
      }
      model.dispose()
    } finally {
      await tf.setBackend('wasm')
    }
  })
})

describe('IISAN learning on cached states', () => {
  /** Users walk a fixed successor function: one random cycle through all items (no repeats within 8 steps). */
  function successorData(numUsers: number, numItems: number) {
    const random = mulberry32(21)
    const cycle = Array.from({ length: numItems }, (_, i) => i + 1).sort(() => random() - 0.5)
    const next = new Map(cycle.map((item, j) => [item, cycle[(j + 1) % numItems]]))
    const successor = (i: number) => next.get(i)!
    const users = Array.from({ length: numUsers }, (_, u) => {
      let item = (u % numItems) + 1
      const items = [item]
      for (let t = 0; t < 7; t++) items.push((item = successor(item)))
      return { key: `u${u}`, items: items.map(String) }
    })
    return buildProtocol(users, Array.from({ length: numItems }, (_, i) => String(i + 1)), { maxSeqLen: 5, minInteractions: 5 })
  }

  const shapes = { text: { numLayers: 4, width: 16 }, image: { numLayers: 2, width: 8 } }
  const overrides = { embeddingDim: 32, maxSeqLen: 5, reduction: 8, sideLayers: [0, 2, 4], seed: 3 }

  it('reaches HR@10 ≥ 0.9 when the next item is a function of the previous; tensors stay flat; checkpoints reload', async () => {
    const data = successorData(240, 60)
    const states = syntheticStates(60, 4, 16, 8, 11)
    const model = new SequentialRecommender(iisanConfig(data.numItems, shapes.text, shapes.image, overrides), { states })
    const before = tf.memory().numTensors
    const perEpoch: number[] = []
    const result = await train(model, data, { maxEpochs: 20, batchSize: 32, lrItem: 5e-3, lrUser: 5e-3, patience: 20, seed: 1 }, {
      onEpoch: () => {
        perEpoch.push(tf.memory().numTensors)
      },
    })
    expect(result.test.hr10).toBeGreaterThanOrEqual(0.9)
    expect(new Set(perEpoch).size).toBe(1)
    expect(tf.memory().numTensors).toBe(before)

    const serving = ServingModel.load(saveCheckpoint(model.params, model.config), result.itemMatrix)
    const window = data.test[0].window
    const history = Array.from(window).filter(Boolean)
    const matrix = tf.tensor2d(result.itemMatrix, [data.numItems + 1, 32])
    const scores = tf.tidy(() => tf.matMul(model.userStates([window], matrix), tf.transpose(matrix)).dataSync())
    matrix.dispose()
    const expected = Array.from({ length: data.numItems }, (_, i) => i + 1)
      .filter((i) => !history.includes(i))
      .sort((a, b) => scores[b] - scores[a])
      .slice(0, 10)
    expect(serving.recommend(history, 10).map((r) => r.index)).toEqual(expected)
    // the reloaded SAN computes the same item matrix from the states: exactly on the runtime the
    // trainer used (ONNX Runtime where it loads), within float tolerance on tfjs
    const reloaded = new SequentialRecommender(model.config, { states })
    reloaded.params.restore(model.params.snapshot())
    const again = await reloaded.itemMatrixForInference()
    expect(Array.from(again.dataSync())).toEqual(Array.from(result.itemMatrix))
    const onTfjs = reloaded.itemMatrix()
    const gap = (onTfjs.dataSync() as Float32Array).reduce((m, v, i) => Math.max(m, Math.abs(v - result.itemMatrix[i])), 0)
    expect(gap).toBeLessThan(1e-5)
    tf.dispose([again, onTfjs])
    reloaded.dispose()
    serving.dispose()
    model.dispose()
  })

  it('stays near chance when the states carry no information about the sequence', async () => {
    let seed = 9
    const rand = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648
    const users = Array.from({ length: 240 }, (_, u) => ({ key: `u${u}`, items: Array.from({ length: 8 }, () => String(1 + Math.floor(rand() * 60))) }))
    const data = buildProtocol(users, Array.from({ length: 60 }, (_, i) => String(i + 1)), { maxSeqLen: 5, minInteractions: 5 })
    const model = new SequentialRecommender(iisanConfig(data.numItems, shapes.text, shapes.image, overrides), { states: syntheticStates(data.numItems, 4, 16, 8, 11) })
    const result = await train(model, data, { maxEpochs: 6, batchSize: 32, lrItem: 3e-3, lrUser: 3e-3, patience: 6, seed: 1 })
    // chance: 10 of ~54 candidates ≈ 0.19
    expect(result.test.hr10).toBeLessThan(0.4)
    model.dispose()
  })

  it('embeds items without text or image, and never mixes in another item', () => {
    const states = syntheticStates(4, 2, 4, 4, 2)
    // item 3 loses its text too: no modality at all
    states.text.rowOf[3] = -1
    const model = new SequentialRecommender(iisanConfig(4, { numLayers: 2, width: 4 }, { numLayers: 2, width: 4 }, { embeddingDim: 4, reduction: 2, sideLayers: [0, 2], numHeads: 1 }), { states })
    const all = model.itemMatrix()
    const rows = all.arraySync() as number[][]
    expect(rows).toHaveLength(5)
    for (const row of rows.slice(1)) for (const v of row) expect(Number.isFinite(v)).toBe(true)
    // an item's embedding does not depend on which other items share its batch
    const alone = model.itemEncoder.embed(Int32Array.from([3]), false)
    expect(Array.from(alone.dataSync()).map((v) => +v.toFixed(5))).toEqual(rows[3].map((v) => +v.toFixed(5)))
    alone.dispose()
    // an item without any modality is made of the learned "missing" states alone: moving them moves it…
    const missingText = model.params.get('san.missing.text')
    missingText.assign(tf.add(missingText, 0.5))
    const moved = model.itemMatrix().arraySync() as number[][]
    expect(moved[3]).not.toEqual(rows[3])
    // …and changing another item's cached states leaves it where it was
    const otherRow = states.text.rowOf[1]
    ;(states.text.data as Float32Array).fill(3, otherRow * 3 * 4, (otherRow + 1) * 3 * 4)
    const afterOther = model.itemMatrix().arraySync() as number[][]
    expect(afterOther[3].map((v) => +v.toFixed(5))).toEqual(moved[3].map((v) => +v.toFixed(5)))
    expect(afterOther[1]).not.toEqual(moved[1])
    all.dispose()
    model.dispose()
  })
})

describe('side-layer-only state stores', () => {
  it('keeping only the side layers (float16 or float32) gives the same item embeddings', async () => {
    const { keepLayers } = await import('@iisan/model')
    const { float32ToFloat16 } = await import('@iisan/safetensors')
    const states = syntheticStates(8, 4, 6, 6, 13)
    const config = iisanConfig(8, { numLayers: 4, width: 6 }, { numLayers: 4, width: 6 }, { embeddingDim: 4, reduction: 2, sideLayers: [0, 2, 4], numHeads: 1 })
    const full = new SequentialRecommender(config, { states })
    const reference = full.itemMatrix()
    const compact = new SequentialRecommender(config, { states: { text: keepLayers(states.text, [0, 2, 4]), image: keepLayers(states.image, [0, 2, 4]) } })
    compact.params.restore(full.params.snapshot())
    const same = compact.itemMatrix()
    expect(Array.from(same.dataSync())).toEqual(Array.from(reference.dataSync()))
    // a store without a layer the SAN asks for says so
    const missingLayer = new SequentialRecommender(config, { states: { text: keepLayers(states.text, [0, 4]), image: states.image } })
    expect(() => missingLayer.itemMatrix()).toThrow(/do not hold backbone layer 2/)
    // float16 rows decode to the float16-rounded values
    const half = { ...keepLayers(states.text, [0, 2, 4]), data: float32ToFloat16(keepLayers(states.text, [0, 2, 4]).data as Float32Array) }
    const halfModel = new SequentialRecommender(config, { states: { text: half, image: keepLayers(states.image, [0, 2, 4]) } })
    halfModel.params.restore(full.params.snapshot())
    const halfMatrix = halfModel.itemMatrix()
    Array.from(halfMatrix.dataSync()).forEach((v, i) => expect(v).toBeCloseTo(reference.dataSync()[i], 2))
    for (const t of [reference, same, halfMatrix]) t.dispose()
    for (const m of [full, compact, missingLayer, halfModel]) m.dispose()
  })
})
