// The fine-tuning baselines' item tower (packages/model/src/backbone-towers.ts) on tiny random
// backbones (d 16, 2 layers; BERT vocab 50; ViT 32×32 images): the authors' intra formula by
// hand, padding and items without images, the optimiser groups, gradients reaching every group,
// and the frozen per-layer states uncached IISAN reads — on wasm and cpu.
import { beforeAll, describe, expect, it } from 'vitest'
import { Params, initBackend, patchWasmKernels, tf, uniqueItems, type ParamGroup } from '@iisan/model'
import { BackboneItemEncoder, frozenClsStates } from '@iisan/model/backbone-towers'
import { TrainableBert, TrainableVit, type BackboneTuning } from '@iisan/backbones/trainable'
import type { BertConfig, VitConfig } from '@iisan/backbones'
import { tinyItemContent } from './tiny-item-content.ts'

const common = { numLayers: 2, hiddenSize: 16, numHeads: 2, intermediateSize: 32, layerNormEps: 1e-12, hiddenAct: 'gelu' as const }
const bertConfig: BertConfig = { modelType: 'bert', ...common, vocabSize: 50, maxPositions: 16, typeVocabSize: 2, padTokenId: 0 }
const vitConfig: VitConfig = { modelType: 'vit', ...common, imageSize: 32, patchSize: 16, numChannels: 3, qkvBias: true, numPatches: 4 }
const D = 8
const N = 7
const SEQ = 5

/** 7 items; titles of 3–5 tokens; images for items 2, 4 and 5 only. */
const content = tinyItemContent(N, SEQ, [2, 4, 5])

function encoder(tuning: BackboneTuning, withImages = true) {
  const params = new Params(5)
  const text = TrainableBert.random(bertConfig, tuning, 1)
  const image = withImages ? TrainableVit.random(vitConfig, tuning, 2) : null
  return { params, text, image, enc: new BackboneItemEncoder({ params, text, image, content, embeddingDim: D }) }
}

function dispose({ params, enc }: ReturnType<typeof encoder>): void {
  enc.dispose()
  params.dispose()
}

const close = (a: number[], b: number[]) => a.forEach((v, i) => expect(v).toBeCloseTo(b[i], 5))
const rows = (t: tf.Tensor) => {
  const v = Array.from(t.dataSync())
  const w = t.shape[1]!
  return Array.from({ length: t.shape[0] }, (_, i) => v.slice(i * w, (i + 1) * w))
}

beforeAll(async () => {
  await initBackend({ prefer: 'wasm' })
  await import('@tensorflow/tfjs-backend-cpu')
})

it('uniqueItems: distinct real ids in first-seen order, slots pointing past the padding row', () => {
  const { unique, slot } = uniqueItems(Int32Array.from([0, 3, 2, 3, 0, 7]))
  expect(Array.from(unique)).toEqual([3, 2, 7])
  expect(Array.from(slot)).toEqual([0, 1, 2, 1, 0, 3])
})

describe.each(['wasm', 'cpu'] as const)('on %s', (backend) => {
  beforeAll(async () => {
    await tf.setBackend(backend)
    await tf.ready()
    if (backend === 'wasm') patchWasmKernels()
  })

  it('registers the authors’ groups: backbone weights, their adapters, and the recsys heads', () => {
    const lora = encoder({ kind: 'lora', rank: 2, alpha: 4 })
    const names = lora.params.namesByGroup()
    expect(names.textEncoder).toContain('text.encoder.layer.0.attention.self.query.bias')
    expect(names.textAdapters).toContain('text.encoder.layer.1.attention.self.value.lora_B')
    expect(names.imageEncoder).toContain('image.encoder.layer.0.attention.attention.value.bias')
    expect(names.imageAdapters).toContain('image.encoder.layer.0.attention.attention.query.lora_A')
    expect(names.recsys?.sort()).toEqual(['com_dense.b', 'com_dense.w', 'image.classifier.b', 'image.classifier.w', 'image.missing', 'text.fc.b', 'text.fc.w'])
    // only what trains is a parameter: 2 layers × (q, v) × (A 16·2 + B 2·16 + bias 16) = 320 per backbone
    expect(lora.params.inGroup('textEncoder').length + lora.params.inGroup('textAdapters').length).toBe(12)
    const heads = 16 * D + D + (16 * D + D) + D + 2 * D * D + D // fc, classifier, missing, com_dense
    expect(lora.params.count()).toBe(2 * 320 + heads)
    // the classifier starts as run.py sets it: xavier_normal_ weight, zero bias
    expect(lora.params.get('image.classifier.b').dataSync().every((v) => v === 0)).toBe(true)
    dispose(lora)
    const bitfit = encoder({ kind: 'bitfit' }, false)
    expect(bitfit.params.groups()).toEqual(['textEncoder', 'recsys'])
    expect(bitfit.params.namesByGroup().recsys).not.toContain('image.classifier.w')
    dispose(bitfit)
  })

  it('embeds by the intra formula: com_dense([e_v, e_t]), the missing vector for items without an image, zeros for padding', () => {
    const m = encoder({ kind: 'adapter', bottleneck: 4, dropout: 0 })
    const ids = Int32Array.from([0, 3, 2, 3, 0, 4])
    const out = m.enc.embed(ids, false)
    expect(out.shape).toEqual([6, D])
    const got = rows(out)
    expect(got[0].every((v) => v === 0) && got[4].every((v) => v === 0)).toBe(true)
    expect(got[3]).toEqual(got[1]) // the same item, embedded once

    // by hand, from the backbones' own outputs: items 3 (no image) and 2, 4 (images)
    const p = (n: string) => m.params.get(n)
    const textCls = (item: number) =>
      m.text.forward(content.text.inputIds.slice(item * SEQ, (item + 1) * SEQ), content.text.attentionMask.slice(item * SEQ, (item + 1) * SEQ), 1, SEQ, { training: false, output: 'last-cls' })[0]
    const head = (x: tf.Tensor2D, w: string, b: string) => tf.add(tf.matMul(x, p(w)), p(b)) as tf.Tensor2D
    const gelu = (x: tf.Tensor) => tf.mul(tf.mul(x, 0.5), tf.add(1, tf.erf(tf.div(x, Math.SQRT2))))
    const eText = (item: number) => gelu(head(textCls(item), 'text.fc.w', 'text.fc.b'))
    const eImage = (item: number) => gelu(head(m.image!.forward(content.image(item)!, 1, { training: false, output: 'last-cls' })[0], 'image.classifier.w', 'image.classifier.b'))
    const item = (eV: tf.Tensor, eT: tf.Tensor) => rows(head(tf.concat([eV, eT], 1) as tf.Tensor2D, 'com_dense.w', 'com_dense.b'))[0]
    tf.tidy(() => {
      close(got[1], item(tf.reshape(p('image.missing'), [1, D]), eText(3)))
      close(got[2], item(eImage(2), eText(2)))
      close(got[5], item(eImage(4), eText(4)))
    })

    // the missing vector reaches exactly the items without an image
    const before = rows(m.enc.embed(Int32Array.from([1, 2, 3]), false))
    p('image.missing').assign(tf.add(p('image.missing'), 1))
    const after = rows(m.enc.embed(Int32Array.from([1, 2, 3]), false))
    expect(after[1]).toEqual(before[1])
    expect(after[0]).not.toEqual(before[0])
    expect(after[2]).not.toEqual(before[2])

    // embedAll: [N+1, D] in inference mode, row 0 zero, the same rows as embed
    const tensors = tf.memory().numTensors
    const all = m.enc.embedAll()
    expect(all.shape).toEqual([N + 1, D])
    const allRows = rows(all)
    all.dispose()
    expect(tf.memory().numTensors).toBe(tensors)
    expect(allRows[0].every((v) => v === 0)).toBe(true)
    rows(m.enc.embed(Int32Array.from({ length: N }, (_, i) => i + 1), false)).forEach((r, i) => close(allRows[i + 1], r))
    dispose(m)
  })

  it.each([
    ['full', { kind: 'full' }],
    ['bitfit', { kind: 'bitfit' }],
    ['adapter', { kind: 'adapter', bottleneck: 4, dropout: 0.1 }],
    ['lora', { kind: 'lora', rank: 2, alpha: 4 }],
  ] as [string, BackboneTuning][])('%s: embed is differentiable to every trainable parameter, and every group gets a gradient', (_, tuning) => {
    const m = encoder(tuning)
    const ids = Int32Array.from([1, 2, 0, 5, 3, 2])
    const probe = tf.randomNormal([ids.length, D], 0, 1, 'float32', 4)
    const tensors = tf.memory().numTensors
    const entries = m.params.entries()
    const grads = tf.tidy(() => {
      const { grads, value } = tf.variableGrads(() => tf.sum(tf.mul(m.enc.embed(ids, true), probe)), entries.map(([, v]) => v))
      value.dispose()
      return grads
    })
    const norms = new Map<ParamGroup, number>()
    for (const [name, v] of entries) {
      expect(grads[v.name], name).toBeDefined()
      const group = m.params.groupOf(v.name)!
      norms.set(group, (norms.get(group) ?? 0) + tf.tidy(() => tf.sum(tf.square(grads[v.name])).dataSync()[0]))
    }
    expect([...norms.keys()].sort()).toEqual([...m.params.groups()].sort())
    for (const [group, norm] of norms) expect(norm, group).toBeGreaterThan(0)
    tf.dispose(grads)
    expect(tf.memory().numTensors).toBe(tensors)
    probe.dispose()
    dispose(m)
  })

  it('dispose frees the frozen backbone weights; the Params store frees the adopted ones', () => {
    const tensors = tf.memory().numTensors
    const m = encoder({ kind: 'lora', rank: 2, alpha: 4 })
    dispose(m)
    expect(tf.memory().numTensors).toBe(tensors)
  })

  it('frozenClsStates: the frozen backbone’s per-layer [CLS] rows, laid out as ModalityStates', () => {
    const text = TrainableBert.random(bertConfig, { kind: 'frozen' }, 1)
    const image = TrainableVit.random(vitConfig, { kind: 'frozen' }, 2)
    const ids = [5, 0, 3, 5, 1]
    const states = frozenClsStates(text, content, ids, { chunk: 2 })
    expect(states).toMatchObject({ numLayers: 2, width: 16, layers: [0, 1, 2] })
    expect(Array.from(states.rowOf)).toEqual([-1, 2, -1, 1, -1, 0, -1, -1])
    const expected = text.forward(content.text.inputIds.slice(3 * SEQ, 4 * SEQ), content.text.attentionMask.slice(3 * SEQ, 4 * SEQ), 1, SEQ, { training: false, output: 'cls-per-layer' })
    const row = states.data.subarray(1 * 3 * 16, 2 * 3 * 16)
    expected.forEach((h, l) => close(Array.from(row.subarray(l * 16, (l + 1) * 16)), Array.from(h.dataSync())))
    tf.dispose(expected)

    const imageStates = frozenClsStates(image, content, [1, 2, 4, 7], { layers: [2] })
    expect(Array.from(imageStates.rowOf)).toEqual([-1, -1, 0, -1, 1, -1, -1, -1])
    expect(imageStates.data.length).toBe(2 * 16)
    const perLayer = image.forward(content.image(4)!, 1, { training: false, output: 'cls-per-layer' })
    close(Array.from(imageStates.data.subarray(16)), Array.from(perLayer[2].dataSync()))
    tf.dispose(perLayer)
    // none of them has an image: no row, and the backbone does not run
    const none = frozenClsStates(image, content, [1, 3, 6], { layers: [1, 2] })
    expect(Array.from(none.rowOf).every((r) => r === -1)).toBe(true)
    expect(none.data.length).toBe(0)
    text.dispose()
    image.dispose()
  })
})
