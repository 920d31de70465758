// Trainable BERT and ViT (packages/backbones/src/trainable.ts) on tiny HF-layout checkpoints
// (d 16, 2 layers, 2 heads, FFN 32; BERT vocab 50; ViT 32×32 images, 16×16 patches): which weights
// each tuning trains, that training leaves the frozen ones alone, that the forward pass is the
// inference models' own, and gradients against central finite differences — on wasm and cpu.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { initBackend, mulberry32, patchWasmKernels, tf } from '@iisan/model'
import { BertModel, Checkpoint, VitModel, ensureDefaultBackbones, readModelConfig, type BertConfig, type VitConfig } from '@iisan/backbones'
import { bertHfConfig, vitHfConfig, writeRandomBert, writeRandomVit } from '@iisan/backbones/default'
import { TrainableBert, TrainableVit, type BackboneTuning, type ForwardOptions } from '@iisan/backbones/trainable'

type Backend = 'wasm' | 'cpu'
type Model = TrainableBert | TrainableVit

const SHAPE = { hidden_size: 16, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 32 }
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'iisan-trainable-'))
const bertDir = path.join(root, 'bert')
const vitDir = path.join(root, 'vit')
let bertConfig: BertConfig
let vitConfig: VitConfig

beforeAll(async () => {
  await initBackend({ prefer: 'wasm' })
  await import('@tensorflow/tfjs-backend-cpu')
  const vocab = Array.from({ length: 50 }, (_, i) => `tok${i}`).join('\n') + '\n'
  writeRandomBert(bertDir, bertHfConfig({ ...SHAPE, vocab_size: 50, max_position_embeddings: 16 }), vocab, 'trainable-test')
  writeRandomVit(vitDir, vitHfConfig({ ...SHAPE, image_size: 32, patch_size: 16 }), 'trainable-test')
  bertConfig = readModelConfig(bertDir) as BertConfig
  vitConfig = readModelConfig(vitDir) as VitConfig
})

afterAll(() => fs.rmSync(root, { recursive: true, force: true }))

async function useBackend(name: Backend): Promise<void> {
  await tf.setBackend(name)
  await tf.ready()
  if (name === 'wasm') patchWasmKernels()
}

const random = mulberry32(11)
// BERT: 2 titles of 6 tokens, the second padded after 4
const BATCH = 2
const SEQ = 6
const inputIds = Int32Array.from([2, 7, 19, 33, 41, 3, 2, 12, 48, 3, 0, 0])
const attentionMask = Int32Array.from([1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0])
// ViT: 2 images [3, 32, 32]
const pixels = Float32Array.from({ length: BATCH * 3 * 32 * 32 }, () => random() * 2 - 1)

const loadBert = (tuning: BackboneTuning, options = {}) => TrainableBert.load(bertConfig, Checkpoint.open(bertDir, 'bert'), tuning, 7, options)
const loadVit = (tuning: BackboneTuning, options = {}) => TrainableVit.load(vitConfig, Checkpoint.open(vitDir, 'vit'), tuning, 7, options)

function forward(model: Model, opts: ForwardOptions): tf.Tensor2D[] {
  return model instanceof TrainableBert ? model.forward(inputIds, attentionMask, BATCH, SEQ, opts) : model.forward(pixels, BATCH, opts)
}

/** The inference model's [CLS] per layer, and (ViT) layernorm(last_hidden_state)[:, 0]. */
function reference(kind: 'bert' | 'vit'): { perLayer: Float32Array[]; lastCls: Float32Array } {
  if (kind === 'bert') {
    const m = BertModel.load(bertConfig, Checkpoint.open(bertDir, 'bert'))
    const { hiddenStates } = m.forward(inputIds, attentionMask, BATCH, SEQ, false)
    const perLayer = hiddenStates.map((h) => h.dataSync() as Float32Array)
    hiddenStates.forEach((h) => h.dispose())
    m.dispose()
    return { perLayer, lastCls: perLayer[perLayer.length - 1] }
  }
  const m = VitModel.load(vitConfig, Checkpoint.open(vitDir, 'vit'))
  const out = m.forward(pixels, BATCH, true)
  const d = vitConfig.hiddenSize
  const all = out.lastHiddenState!.dataSync() as Float32Array // [B, S, d]
  const seq = vitConfig.numPatches + 1
  const lastCls = Float32Array.from({ length: BATCH * d }, (_, i) => all[Math.floor(i / d) * seq * d + (i % d)])
  const perLayer = out.hiddenStates.map((h) => {
    const v = h.dataSync() as Float32Array
    return Float32Array.from({ length: BATCH * d }, (_, i) => v[Math.floor(i / d) * seq * d + (i % d)])
  })
  out.hiddenStates.forEach((h) => h.dispose())
  out.lastHiddenState!.dispose()
  m.dispose()
  return { perLayer, lastCls }
}

const values = (ts: tf.Tensor[]) => {
  const out = ts.map((t) => Array.from(t.dataSync()))
  ts.forEach((t) => t.dispose())
  return out
}
const worst = (a: ArrayLike<number>, b: ArrayLike<number>) => Array.from(a).reduce((w, v, i) => Math.max(w, Math.abs(v - b[i])), 0)

const TUNINGS: Record<string, BackboneTuning> = {
  frozen: { kind: 'frozen' },
  full: { kind: 'full' },
  bitfit: { kind: 'bitfit' },
  adapter: { kind: 'adapter', bottleneck: 4, dropout: 0 },
  lora: { kind: 'lora', rank: 4, alpha: 8 },
}

describe('which weights each tuning trains (counted by hand)', () => {
  // BERT, d 16, FFN 32, vocab 50, 16 positions, 2 token types, 2 layers; pooler not loaded.
  //   embeddings: word 50·16 = 800, position 16·16 = 256, type 2·16 = 32, LayerNorm 2·16 = 32 → 1120
  //   layer: q, k, v, o 4·(16·16 + 16) = 1088, LN 32, intermediate 16·32 + 32 = 544,
  //          output 32·16 + 16 = 528, LN 32 → 2224; two layers 4448            full: 5568 in 5 + 2·16 = 37 tensors
  //   biases: embedding LN β 16; per layer q, k, v, o 4·16 + LN β 16 + intermediate 32 + output 16
  //          + LN β 16 = 144; → 16 + 2·144 = 304                                 bitfit: 304 in 1 + 2·8 = 17 tensors
  //   adapters (r 4): down 16·4 + 4 = 68, up 4·16 + 16 = 80 → 148; 2 per layer → 4·148 = 592 in 16 tensors
  //   LoRA (r 4): A 16·4 + B 4·16 = 128 per projection, + its bias 16 → 144; q and v of 2 layers → 576
  //          in 8 A/B + 4 bias tensors
  // ViT, d 16, FFN 32, 32×32 images, 16×16 patches → 4 patches + [CLS] = 5 positions, 2 layers.
  //   cls 16, position 5·16 = 80, patch projection 16·3·16·16 + 16 = 12304, final LN 32
  //   layer: LN before 32, q, k, v, o 1088, LN after 32, intermediate 544, output 528 → 2224; ×2 = 4448
  //   full: 16 + 80 + 12304 + 32 + 4448 = 16880 in 4 + 2 + 2·16 = 38 tensors
  //   bitfit: patch bias 16 + per layer (LN β 16 + q, k, v, o 64 + LN β 16 + 32 + 16 = 144)·2 + final LN β 16 = 320
  //          in 1 + 2·8 + 1 = 18 tensors
  //   adapters and LoRA as BERT's: 592 and 576
  const expected = {
    bert: { frozen: [0, 0], full: [5568, 37], bitfit: [304, 17], adapter: [592, 16], lora: [576, 12] },
    vit: { frozen: [0, 0], full: [16880, 38], bitfit: [320, 18], adapter: [592, 16], lora: [576, 12] },
  }

  it.each(Object.keys(TUNINGS))('%s', async (tuning) => {
    await useBackend('wasm')
    for (const kind of ['bert', 'vit'] as const) {
      const model = kind === 'bert' ? loadBert(TUNINGS[tuning]) : loadVit(TUNINGS[tuning])
      const trainable = model.trainableWeights()
      const [size, tensors] = expected[kind][tuning as keyof (typeof expected)['bert']]
      expect(trainable.reduce((s, w) => s + w.variable.size, 0), `${kind} ${tuning}`).toBe(size)
      expect(trainable.length, `${kind} ${tuning}`).toBe(tensors)
      // the frozen rest stays plain tensors; all weights together are the full model (+ what the tuning adds)
      expect(model.namedWeights().filter((w) => !w.trainable).every((w) => !(w.tensor instanceof tf.Variable))).toBe(true)
      expect(model.namedWeights().filter((w) => w.role === 'backbone').reduce((s, w) => s + w.tensor.size, 0)).toBe(expected[kind].full[0])
      model.dispose()
    }
  })

  it('names: HF names for the backbone, the authors’ module paths for what a tuning adds', async () => {
    await useBackend('wasm')
    const lora = loadBert(TUNINGS.lora)
    expect(lora.trainableWeights().map((w) => `${w.name}:${w.role}:${w.isBias}`).sort().slice(0, 6)).toEqual([
      'encoder.layer.0.attention.self.query.bias:backbone:true',
      'encoder.layer.0.attention.self.query.lora_A:lora:false',
      'encoder.layer.0.attention.self.query.lora_B:lora:false',
      'encoder.layer.0.attention.self.value.bias:backbone:true',
      'encoder.layer.0.attention.self.value.lora_A:lora:false',
      'encoder.layer.0.attention.self.value.lora_B:lora:false',
    ])
    lora.dispose()
    const adapter = loadVit(TUNINGS.adapter)
    expect(adapter.trainableWeights().map((w) => w.name).slice(0, 8)).toEqual([
      'encoder.layer.0.attention.output.adapter.down.weight',
      'encoder.layer.0.attention.output.adapter.down.bias',
      'encoder.layer.0.attention.output.adapter.up.weight',
      'encoder.layer.0.attention.output.adapter.up.bias',
      'encoder.layer.0.output.adapter.down.weight',
      'encoder.layer.0.output.adapter.down.bias',
      'encoder.layer.0.output.adapter.up.weight',
      'encoder.layer.0.output.adapter.up.bias',
    ])
    adapter.dispose()
    const bitfit = loadVit(TUNINGS.bitfit)
    // LayerNorm betas count: the authors train every "bias" inside mm_encoder
    expect(bitfit.trainableWeights().map((w) => w.name)).toEqual(expect.arrayContaining(['layernorm.bias', 'encoder.layer.1.layernorm_before.bias', 'embeddings.patch_embeddings.projection.bias']))
    expect(bitfit.trainableWeights().every((w) => w.isBias)).toBe(true)
    bitfit.dispose()
  })
})

describe.each(['wasm', 'cpu'] as const)('forward on %s', (backend) => {
  beforeAll(() => useBackend(backend))

  it.each(['bert', 'vit'] as const)('%s: the frozen model’s cls-per-layer is the inference model’s, last-cls its (final-LN) [CLS]', (kind) => {
    const ref = reference(kind)
    const model = kind === 'bert' ? loadBert(TUNINGS.frozen) : loadVit(TUNINGS.frozen)
    const perLayer = values(forward(model, { training: false, output: 'cls-per-layer' }))
    expect(perLayer.length).toBe(3)
    perLayer.forEach((v, l) => expect(worst(v, ref.perLayer[l])).toBeLessThanOrEqual(1e-5))
    const [lastCls] = values(forward(model, { training: false, output: 'last-cls' }))
    expect(lastCls.length).toBe(BATCH * 16)
    expect(worst(lastCls, ref.lastCls)).toBeLessThanOrEqual(1e-5)
    model.dispose()
  })

  it.each(['bert', 'vit'] as const)('%s: LoRA at initialisation (B = 0) gives exactly the frozen backbone’s numbers', (kind) => {
    const ref = reference(kind)
    const model = kind === 'bert' ? loadBert(TUNINGS.lora) : loadVit(TUNINGS.lora)
    values(forward(model, { training: false, output: 'cls-per-layer' })).forEach((v, l) => expect(v).toEqual(Array.from(ref.perLayer[l])))
    expect(values(forward(model, { training: true, output: 'last-cls', dropoutSeed: () => 1 }))[0].length).toBe(BATCH * 16)
    model.dispose()
  })

  it.each(['bert', 'vit'] as const)('%s: the authors’ adapters are not an identity at initialisation, only close to one', (kind) => {
    // AdapterBlock draws BOTH projections from N(0, σ² = 0.01²) with zero biases (no zero-init of
    // the up-projection), so at initialisation an adapter is not the identity: with z = down·h ~
    // N(0, σ²|h|²), E|up(relu(z))|² = d·r·σ²·E[relu(z)²] = d·r·σ⁴|h|²/2, i.e. it adds a term of
    // relative size σ²·√(d·r/2) — here (d 16, r 8) 8e-4 per adapter; at base size (d 768, r 64)
    // 1.6 %, and 24 of them. So: the states move, by about two adapters' worth per layer, and with
    // the up-projections zeroed the adapters are exactly the identity.
    const ref = reference(kind)
    const wide = kind === 'bert' ? loadBert({ kind: 'adapter', bottleneck: 8, dropout: 0 }) : loadVit({ kind: 'adapter', bottleneck: 8, dropout: 0 })
    const adapterWeights = wide.trainableWeights()
    for (const part of ['down', 'up']) {
      const w = adapterWeights.filter((t) => t.name.endsWith(`.${part}.weight`)).flatMap((t) => Array.from(t.variable.dataSync())) // 4 · 128 values
      const mean = w.reduce((a, b) => a + b, 0) / w.length
      const std = Math.sqrt(w.reduce((a, b) => a + (b - mean) ** 2, 0) / w.length)
      expect(Math.abs(mean)).toBeLessThan(0.002)
      expect(std).toBeGreaterThan(0.0085)
      expect(std).toBeLessThan(0.0115)
    }
    expect(adapterWeights.filter((t) => t.isBias).every((t) => t.variable.dataSync().every((v) => v === 0))).toBe(true)
    const atInit = values(forward(wide, { training: false, output: 'cls-per-layer' }))
    expect(atInit[0]).toEqual(Array.from(ref.perLayer[0])) // embeddings: no adapter yet
    const norm = (v: ArrayLike<number>) => Math.sqrt(Array.from(v).reduce((s, x) => s + x * x, 0))
    const relative = [1, 2].map((l) => norm(atInit[l].map((v, i) => v - ref.perLayer[l][i])) / norm(ref.perLayer[l]))
    const perAdapter = 0.01 ** 2 * Math.sqrt((16 * 8) / 2)
    relative.forEach((dev, l) => {
      expect(dev).toBeGreaterThan((l + 1) * 0.1 * perAdapter)
      expect(dev).toBeLessThan((l + 1) * 2 * perAdapter * 2) // two adapters a layer, 2× slack for the residual stream
    })
    for (const t of adapterWeights) if (t.name.endsWith('.up.weight')) t.variable.assign(tf.zerosLike(t.variable))
    values(forward(wide, { training: false, output: 'cls-per-layer' })).forEach((v, l) => expect(v).toEqual(Array.from(ref.perLayer[l])))
    wide.dispose()
  })

  it('dropout: off in inference, seeded in training, and only where HF has it', () => {
    const bert = loadBert(TUNINGS.full)
    const evalOut = values(forward(bert, { training: false, output: 'last-cls' }))[0]
    const seeded = (s: number) => {
      let n = s
      return () => n++
    }
    const a = values(forward(bert, { training: true, output: 'last-cls', dropoutSeed: seeded(5) }))[0]
    const b = values(forward(bert, { training: true, output: 'last-cls', dropoutSeed: seeded(5) }))[0]
    const c = values(forward(bert, { training: true, output: 'last-cls', dropoutSeed: seeded(6) }))[0]
    expect(a).toEqual(b)
    expect(a).not.toEqual(c)
    expect(a).not.toEqual(evalOut)
    bert.dispose()
    // ViT's config has no dropout; BERT's can be switched off
    const vit = loadVit(TUNINGS.full)
    expect(values(forward(vit, { training: true, output: 'last-cls' }))[0]).toEqual(values(forward(vit, { training: false, output: 'last-cls' }))[0])
    vit.dispose()
    const quiet = loadBert(TUNINGS.full, { dropout: { hidden: 0, attention: 0 } })
    expect(values(forward(quiet, { training: true, output: 'last-cls' }))[0]).toEqual(evalOut)
    quiet.dispose()
  })
})

/** sum(outputs ⊙ probe): linear in the outputs, so the loss is as smooth as the network. */
function lossFn(model: Model, probe: tf.Tensor2D): () => tf.Scalar {
  return () => tf.sum(tf.mul(forward(model, { training: false, output: 'last-cls' })[0], probe))
}

describe.each(['wasm', 'cpu'] as const)('training steps on %s', (backend) => {
  beforeAll(() => useBackend(backend))

  it.each(['full', 'bitfit', 'adapter', 'lora'])('%s: Adam changes every trainable weight and no frozen one; no tensor leaks', (tuning) => {
    for (const kind of ['bert', 'vit'] as const) {
      const model = kind === 'bert' ? loadBert(TUNINGS[tuning]) : loadVit(TUNINGS[tuning])
      const probe = tf.randomNormal([BATCH, 16], 0, 1, 'float32', 3) as tf.Tensor2D
      const before = new Map(model.namedWeights().map((w) => [w.name, Array.from(w.tensor.dataSync())]))
      const variables = model.trainableWeights().map((w) => w.variable)
      const tensors = tf.memory().numTensors
      const optimizer: tf.Optimizer = tf.train.adam(1e-2)
      // two steps: LoRA's A has no gradient while B is still zero
      for (let step = 0; step < 2; step++) {
        tf.tidy(() => {
          const { grads } = tf.variableGrads(lossFn(model, probe), variables)
          optimizer.applyGradients(grads)
        })
      }
      optimizer.dispose()
      expect(tf.memory().numTensors, `${kind} ${tuning}`).toBe(tensors)
      for (const w of model.namedWeights()) {
        const after = Array.from(w.tensor.dataSync())
        if (w.trainable) expect(after, `${kind} ${w.name}`).not.toEqual(before.get(w.name))
        else expect(after, `${kind} ${w.name}`).toEqual(before.get(w.name))
      }
      probe.dispose()
      model.dispose()
    }
  })

  it('a frozen backbone inside a gradient tape records nothing: the tape holds no copy of its activations', () => {
    const model = loadBert(TUNINGS.frozen)
    const scale = tf.variable(tf.scalar(2))
    let added = -1
    const { grads } = tf.variableGrads(() => {
      const before = tf.memory().numTensors
      const outs = forward(model, { training: true, output: 'cls-per-layer' })
      added = tf.memory().numTensors - before
      return tf.mul(tf.sum(tf.stack(outs)), scale) as tf.Scalar
    }, [scale])
    expect(added).toBe(3) // the L + 1 outputs, nothing kept for a backward pass
    expect(grads[scale.name].dataSync()[0]).not.toBe(0)
    tf.dispose(grads)
    scale.dispose()
    model.dispose()
  })
})

/**
 * Central differences on float32: with ε = 1e-2 on O(0.1–1) weights the truncation error is
 * O(ε²·f''') ≈ 1e-5 and the rounding error of a loss of magnitude ~5 is ≈ 5·6e-8/(2ε) ≈ 1e-5, so
 * 2 % relative agreement (with a 1e-4 floor) is well inside what float32 supports while a wrong
 * gradient (a missing path, a transposed weight, a dropped scale) is far outside it. The direction
 * is sign(analytic gradient) on a few sampled entries (a whole row for embeddings): the analytic
 * directional derivative is then Σ|g| > 0, and the finite difference must reproduce it.
 */
function checkGradient(model: Model, name: string, probe: tf.Tensor2D, support: (shape: number[]) => number[]): { analytic: number; numeric: number } {
  const weight = model.trainableWeights().find((w) => w.name === name)
  if (!weight) throw new Error(`${name} does not train`)
  const v = weight.variable
  const loss = lossFn(model, probe)
  const { grads, value } = tf.variableGrads(loss, [v])
  value.dispose()
  const g = grads[v.name].dataSync()
  tf.dispose(grads)
  const direction = new Float32Array(v.size)
  for (const i of support(v.shape)) direction[i] = Math.sign(g[i])
  const analytic = direction.reduce((s, di, i) => s + di * g[i], 0)
  const eps = 1e-2
  const original = v.clone()
  const at = (sign: number) =>
    tf.tidy(() => {
      v.assign(tf.add(original, tf.mul(tf.tensor(direction, v.shape), sign * eps)))
      return loss().dataSync()[0]
    })
  const numeric = (at(1) - at(-1)) / (2 * eps)
  v.assign(original)
  original.dispose()
  return { analytic, numeric }
}

const entries = (...flat: number[]) => () => flat
const row = (r: number) => (shape: number[]) => Array.from({ length: shape[1] }, (_, j) => r * shape[1] + j)

describe.each(['wasm', 'cpu'] as const)('gradients against central differences on %s', (backend) => {
  beforeAll(() => useBackend(backend))

  const cases: { kind: 'bert' | 'vit'; tuning: BackboneTuning; weights: [string, (shape: number[]) => number[]][]; prepare?: (m: Model) => void }[] = [
    {
      kind: 'bert',
      tuning: TUNINGS.full,
      weights: [
        ['embeddings.word_embeddings.weight', row(19)], // a token of the first title
        ['encoder.layer.0.attention.output.LayerNorm.weight', entries(1, 6, 13)],
        ['encoder.layer.1.intermediate.dense.weight', entries(5, 77, 300)],
        ['embeddings.position_embeddings.weight', row(2)],
      ],
    },
    {
      kind: 'bert',
      tuning: TUNINGS.lora,
      // B starts at zero, which makes A's gradient zero: give B values first
      prepare: (m) => m.trainableWeights().forEach((w) => w.name.endsWith('lora_B') && w.variable.assign(tf.randomNormal(w.variable.shape, 0, 0.3, 'float32', 5))),
      weights: [
        ['encoder.layer.0.attention.self.query.lora_A', entries(3, 20, 41)],
        ['encoder.layer.1.attention.self.value.lora_B', entries(0, 17, 50)],
      ],
    },
    {
      kind: 'bert',
      tuning: TUNINGS.adapter,
      // the up-projection: the output is linear in it, so no ReLU kink sits inside ±ε
      weights: [['encoder.layer.0.output.adapter.up.weight', entries(2, 30, 61)]],
    },
    {
      kind: 'vit',
      tuning: TUNINGS.full,
      weights: [
        ['embeddings.patch_embeddings.projection.weight', entries(7, 500, 12000)],
        ['encoder.layer.0.layernorm_before.weight', entries(0, 9)],
        ['layernorm.weight', entries(4, 11)],
        ['embeddings.cls_token', entries(0, 5, 15)],
      ],
    },
    {
      kind: 'vit',
      tuning: TUNINGS.lora,
      prepare: (m) => m.trainableWeights().forEach((w) => w.name.endsWith('lora_B') && w.variable.assign(tf.randomNormal(w.variable.shape, 0, 0.3, 'float32', 6))),
      weights: [
        ['encoder.layer.1.attention.attention.query.lora_A', entries(1, 33, 60)],
        ['encoder.layer.0.attention.attention.value.lora_B', entries(8, 40)],
      ],
    },
    {
      kind: 'vit',
      tuning: TUNINGS.adapter,
      weights: [['encoder.layer.1.attention.output.adapter.up.weight', entries(4, 25, 63)]],
    },
  ]

  it.each(cases.map((c) => [`${c.kind} ${c.tuning.kind}`, c] as const))('%s', (_, c) => {
    const model = c.kind === 'bert' ? loadBert(c.tuning) : loadVit(c.tuning)
    c.prepare?.(model)
    const probe = tf.randomNormal([BATCH, 16], 0, 1, 'float32', 9) as tf.Tensor2D
    for (const [name, support] of c.weights) {
      const { analytic, numeric } = checkGradient(model, name, probe, support)
      console.log(`${backend} ${c.kind} ${name}: analytic ${analytic.toExponential(4)} numeric ${numeric.toExponential(4)}`)
      expect(analytic).toBeGreaterThan(1e-3)
      expect(Math.abs(numeric - analytic), name).toBeLessThanOrEqual(2e-2 * analytic + 1e-4)
    }
    probe.dispose()
    model.dispose()
  })
})

describe('the demo folder', () => {
  it('loads trainable, and LoRA at initialisation reproduces BertModel on it', async () => {
    await useBackend('wasm')
    const paths = await ensureDefaultBackbones(path.join(root, 'demo'))
    const config = readModelConfig(paths.text) as BertConfig
    const lora = TrainableBert.load(config, Checkpoint.open(paths.text, 'bert'), TUNINGS.lora, 1)
    const plain = BertModel.load(config, Checkpoint.open(paths.text, 'bert'))
    const ids = Int32Array.from([101, 2023, 2003, 1037, 3231, 102])
    const mask = new Int32Array(6).fill(1)
    const got = values(lora.forward(ids, mask, 1, 6, { training: false, output: 'cls-per-layer' }))
    const want = values(plain.forward(ids, mask, 1, 6, false).hiddenStates)
    expect(got).toEqual(want)
    lora.dispose()
    plain.dispose()
  })
})
