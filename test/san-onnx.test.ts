// IISAN's catalogue pass on ONNX Runtime (packages/model/src/san-onnx.ts, issue 12): the SAN +
// fusion as an ONNX graph built from the current parameters must give the rows the tfjs forward
// gives, for every tower layout, both activations, IISAN-Versa's image-to-text map, and items
// lacking a modality; with parameters moved off their initial values so that every gate, SANB,
// F, P and stand-in matters. On wasm and cpu (the tfjs side of the comparison).
import { spawnSync } from 'node:child_process'
import { beforeAll, describe, expect, it } from 'vitest'
import { SequentialRecommender, getMethod, initBackend, mulberry32, tf, type CachedStates, type ModalityStates } from '@iisan/model'
import { REPO_ROOT } from './helpers/db.ts'
import { perturbParams } from './helpers/random-states.ts'

const ITEMS = 70

function states(L: number, d: number, seed: number, absent: (item: number) => boolean): ModalityStates {
  const r = mulberry32(seed)
  const rowOf = new Int32Array(ITEMS + 1).fill(-1)
  let rows = 0
  for (let item = 1; item <= ITEMS; item++) if (!absent(item)) rowOf[item] = rows++
  return { numLayers: L, width: d, rowOf, data: Float32Array.from({ length: rows * (L + 1) * d }, () => r() * 2 - 1) }
}

function model(settings: Record<string, unknown>, imageWidth: number): SequentialRecommender {
  const cached: CachedStates = { text: states(4, 24, 1, (i) => i % 11 === 0), image: states(4, imageWidth, 2, (i) => i % 4 === 0) }
  const method = getMethod('iisan')
  const config = method.modelConfig(ITEMS, { embeddingDim: 16, numBlocks: 1, numHeads: 2, maxSeqLen: 5, seed: 3, reduction: 4, ...settings }, { states: cached })
  const m = new SequentialRecommender(config, { states: cached })
  perturbParams(m, 9)
  return m
}

const maxDifference = (a: Float32Array, b: Float32Array) => a.reduce((m, x, i) => Math.max(m, Math.abs(x - b[i])), 0)

beforeAll(async () => {
  await initBackend({ prefer: 'wasm' })
  await import('@tensorflow/tfjs-backend-cpu')
})

describe.each(['wasm', 'cpu'] as const)('the SAN on ONNX Runtime against tfjs (%s)', (backend) => {
  beforeAll(async () => {
    await tf.setBackend(backend)
    await tf.ready()
  })

  const layouts: [string, Record<string, unknown>, number][] = [
    ['intra_inter, ReLU (the paper)', { modality: 'intra_inter', activation: 'relu' }, 24],
    ['intra_inter, GELU', { modality: 'intra_inter', activation: 'gelu' }, 24],
    ['intra only', { modality: 'intra', activation: 'relu' }, 24],
    ['inter only', { modality: 'inter', activation: 'relu' }, 24],
    ['IISAN-Versa: image width 16 mapped to the text width 24', { modality: 'intra_inter', activation: 'relu' }, 16],
  ]
  it.each(layouts)('%s', async (_, settings, imageWidth) => {
    const m = model(settings, imageWidth)
    try {
      const reference = m.itemMatrix()
      const onOrt = await m.itemEncoder.embedAllOnRuntime!()
      expect(onOrt).not.toBeNull()
      expect(onOrt!.shape).toEqual([ITEMS + 1, 16])
      const a = reference.dataSync() as Float32Array
      const b = onOrt!.dataSync() as Float32Array
      expect(Array.from(b.subarray(0, 16))).toEqual(new Array(16).fill(0)) // padding row
      expect(maxDifference(a, b)).toBeLessThan(1e-5)
      // the rows are far from zero: the comparison means something
      expect(Math.max(...Array.from(a, Math.abs))).toBeGreaterThan(0.5)
      tf.dispose([reference, onOrt!])
    } finally {
      m.dispose()
    }
  })
})

describe('where ONNX Runtime is not used', () => {
  it('BACKBONE_RUNTIME=tfjs, or an addon that does not load: no runtime pass, evaluation stays on tfjs', () => {
    const script = `import { getMethod, SequentialRecommender, initBackend } from '@iisan/model'
await initBackend({ prefer: 'cpu' })
const states = { numLayers: 2, width: 8, rowOf: Int32Array.of(-1, 0, 1), data: new Float32Array(2 * 3 * 8).fill(0.5) }
const given = { states: { text: states, image: states } }
const m = new SequentialRecommender(getMethod('iisan').modelConfig(2, { embeddingDim: 8, reduction: 2, maxSeqLen: 3, numHeads: 2 }, given), given)
const fast = await m.itemEncoder.embedAllOnRuntime()
const matrix = await m.itemMatrixForInference()
console.log(JSON.stringify({ fast, shape: matrix.shape }))`
    for (const [env, preload] of [[{ BACKBONE_RUNTIME: 'tfjs' }, []], [{ BACKBONE_RUNTIME: '' }, ['--import', './test/helpers/without-onnxruntime.mjs']]] as const) {
      const r = spawnSync(process.execPath, [...preload, '--import', 'tsx', '--input-type=module', '-e', script], { cwd: REPO_ROOT, encoding: 'utf8', env: { ...process.env, ...env } })
      expect(r.status, r.stderr).toBe(0)
      expect(JSON.parse(r.stdout.trim().split('\n').pop()!)).toEqual({ fast: null, shape: [3, 8] })
    }
  })
})
