// Backbones against the float64 reference fixtures (test/fixtures/backbones), on both inference
// runtimes (ONNX Runtime, the default, and tfjs on the wasm backend): every layer's hidden states
// within |got − exp| ≤ 1e-4·max(1, |exp|), token ids and resized images exactly, plus checkpoint
// layouts (hub-style names, shards, F16/BF16) and errors.
import fs from 'node:fs'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import * as tf from '@tensorflow/tfjs-core'
import { float32ToFloat16, parseSafetensors, serializeSafetensors, toFloat32, type TensorToWrite } from '@iisan/safetensors'
import { ensureBackend, fingerprintBackbone, loadImageBackbone, loadTextBackbone } from '@iisan/backbones'
import {
  copyFixtureMeta,
  fixtureDir,
  fixturePng,
  itemMajor,
  readExpected,
  tempDir,
  worstError,
  type BertExpected,
  type VitExpected,
} from './fixtures-gen/backbone-fixtures.ts'

const TOL = 1e-4

/** float32 → bfloat16 bits, round to nearest even. */
function float32ToBfloat16(x: Float32Array): Uint16Array {
  const bits = new Uint32Array(x.buffer, x.byteOffset, x.length)
  return Uint16Array.from(bits, (b) => (b + 0x7fff + ((b >>> 16) & 1)) >>> 16)
}
const tmpRoots: string[] = []
const tmp = (p: string): string => {
  const d = tempDir(p)
  tmpRoots.push(d)
  return d
}

beforeAll(async () => {
  await ensureBackend()
})

afterAll(() => {
  for (const d of tmpRoots) fs.rmSync(d, { recursive: true, force: true })
})

it('runs on the wasm backend, whose erf is accurate enough for exact GELU', async () => {
  expect(tf.getBackend()).toBe('wasm')
  // erf(x) to float64 precision by its Maclaurin series (|x| ≤ 3) / continued fraction (beyond).
  const erf64 = (x: number): number => {
    const ax = Math.abs(x)
    if (ax < 3) {
      let term = ax
      let sum = ax
      for (let n = 1; Math.abs(term) > 1e-17 * Math.abs(sum); n++) {
        term *= (-ax * ax) / n
        sum += term / (2 * n + 1)
      }
      return (Math.sign(x) * sum * 2) / Math.sqrt(Math.PI)
    }
    let f = 0
    for (let k = 60; k >= 1; k--) f = k / 2 / (ax + f)
    return Math.sign(x) * (1 - Math.exp(-ax * ax) / Math.sqrt(Math.PI) / (ax + f))
  }
  const xs = Float32Array.from({ length: 16001 }, (_, i) => -8 + i * 0.001)
  const got = await tf.tidy(() => tf.erf(tf.tensor1d(xs))).data()
  let worst = 0
  xs.forEach((x, i) => (worst = Math.max(worst, Math.abs(got[i] - erf64(x)))))
  expect(worst).toBeLessThan(1e-6)
})

/** Each fixture on each runtime: [runtime, fixture, weights file]. */
const onBothRuntimes = (kind: 'bert' | 'vit') =>
  (['onnx', 'tfjs'] as const).flatMap((runtime) => [
    [runtime, `${kind}-tiny-a`, 'model.safetensors'],
    [runtime, `${kind}-tiny-b`, 'model.safetensors'],
    [runtime, `${kind}-tiny-b`, 'model.hubstyle.safetensors'],
    [runtime, `${kind}-tiny-sharp`, 'model.safetensors'],
  ] as const)

describe.each(onBothRuntimes('bert'))('%s: BERT %s (%s)', (runtime, name, weightsFile) => {
  const exp = readExpected<BertExpected>(name)

  it('token ids and mask exactly, every layer within tolerance', async () => {
    const bb = await loadTextBackbone(fixtureDir(name), { weightsFile, runtime })
    expect(bb.runtime).toBe(runtime)
    const hs = await bb.hiddenStates(exp.texts)
    expect(Array.from(hs.inputIds)).toEqual(exp.input_ids.flat())
    expect(Array.from(hs.attentionMask)).toEqual(exp.attention_mask.flat())
    expect(hs.numLayers + 1).toBe(exp.hidden_states.length)
    const worst = worstError(hs.hiddenStates, exp.hidden_states.flat(3))
    console.log(`${runtime} ${name} ${weightsFile}: worst hidden-state error ${worst.toExponential(2)}`)
    expect(worst).toBeLessThanOrEqual(TOL)

    // The batched CLS path (batches of 3 → a ragged last batch) gives the same numbers.
    const enc = await bb.encodeTexts(exp.texts, { batchSize: 3 })
    expect(worstError(enc.clsPerLayer, itemMajor(exp.cls_per_layer))).toBeLessThanOrEqual(TOL)
    expect(Array.from(enc.inputIds)).toEqual(exp.input_ids.flat())
    bb.dispose()
  })
})

describe.each(onBothRuntimes('vit'))('%s: ViT %s (%s)', (runtime, name, weightsFile) => {
  const exp = readExpected<VitExpected>(name)

  it('every layer and last_hidden_state within tolerance from the reference pixels', async () => {
    const bb = await loadImageBackbone(fixtureDir(name), { weightsFile, runtime })
    expect(bb.runtime).toBe(runtime)
    const n = exp.pixel_values.length
    const hs = await bb.hiddenStates(Float32Array.from(exp.pixel_values.flat(3)), n)
    const worst = worstError(hs.hiddenStates, exp.hidden_states.flat(3))
    console.log(`${runtime} ${name} ${weightsFile}: worst hidden-state error ${worst.toExponential(2)}`)
    expect(worst).toBeLessThanOrEqual(TOL)
    expect(worstError(hs.lastHiddenState, exp.last_hidden_state.flat(2))).toBeLessThanOrEqual(TOL)
    bb.dispose()
  })

  it('decodes, resizes exactly like PIL, normalises, and encodes from image files', async () => {
    const bb = await loadImageBackbone(fixtureDir(name), { weightsFile, runtime })
    const pngs = await Promise.all(exp.images_u8_hwc.map((_, i) => fixturePng(exp, i)))
    for (let i = 0; i < pngs.length; i++) {
      const prepared = await bb.preprocess(pngs[i])
      expect(Array.from(prepared.resized.data)).toEqual(exp.resized_u8_hwc[i].flat(2))
      expect(worstError(prepared.pixelValues, exp.pixel_values[i].flat(2))).toBeLessThan(1e-7)
    }
    const results = await bb.encodeImages(pngs, { batchSize: 2 })
    const cls = new Float32Array(results.length * (bb.numLayers + 1) * bb.hiddenSize)
    results.forEach((r, i) => {
      if (!r.ok) throw new Error(r.error)
      cls.set(r.cls, i * r.cls.length)
    })
    expect(worstError(cls, itemMajor(exp.cls_per_layer))).toBeLessThanOrEqual(TOL)
    bb.dispose()
  })
})

describe('checkpoint layouts', () => {
  const exp = readExpected<BertExpected>('bert-tiny-a')
  const original = parseSafetensors(fs.readFileSync(path.join(fixtureDir('bert-tiny-a'), 'model.safetensors')))
  const f32 = (): Record<string, TensorToWrite> => {
    const out: Record<string, TensorToWrite> = {}
    for (const [name, e] of original.tensors) out[name] = { dtype: 'F32', shape: e.shape, data: toFloat32(e) }
    return out
  }

  it('loads a sharded checkpoint through model.safetensors.index.json', async () => {
    const dir = tmp('sharded')
    copyFixtureMeta('bert-tiny-a', dir)
    const all = f32()
    const names = Object.keys(all).sort()
    const shards = [names.filter((_, i) => i % 2 === 0), names.filter((_, i) => i % 2 === 1)]
    const weightMap: Record<string, string> = {}
    shards.forEach((shard, s) => {
      const file = `model-0000${s + 1}-of-00002.safetensors`
      fs.writeFileSync(path.join(dir, file), serializeSafetensors(Object.fromEntries(shard.map((n) => [n, all[n]]))))
      for (const n of shard) weightMap[n] = file
    })
    fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }))
    const bb = await loadTextBackbone(dir)
    const hs = await bb.hiddenStates(exp.texts)
    expect(worstError(hs.hiddenStates, exp.hidden_states.flat(3))).toBeLessThanOrEqual(TOL)
    expect(bb.fingerprint).toBe(fingerprintBackbone(fixtureDir('bert-tiny-a')))
    bb.dispose()

    fs.rmSync(path.join(dir, 'model-00002-of-00002.safetensors'))
    await expect(loadTextBackbone(dir)).rejects.toThrow(/model-00002-of-00002\.safetensors/)
  })

  it.each(['F16', 'BF16'] as const)('reads %s weights (widened exactly to float32)', async (dtype) => {
    // A half-precision checkpoint must give exactly the numbers of an F32 checkpoint holding the
    // same (rounded) values.
    const halfTensors: Record<string, TensorToWrite> = {}
    const widenedTensors: Record<string, TensorToWrite> = {}
    for (const [name, t] of Object.entries(f32())) {
      const half = dtype === 'F16' ? float32ToFloat16(t.data as Float32Array) : float32ToBfloat16(t.data as Float32Array)
      halfTensors[name] = { dtype, shape: t.shape, data: half }
      widenedTensors[name] = { dtype: 'F32', shape: t.shape, data: toFloat32({ dtype, shape: t.shape, bytes: new Uint8Array(half.buffer) }) }
    }
    const halfDir = tmp(`half-${dtype}`)
    const wideDir = tmp(`wide-${dtype}`)
    for (const [dir, tensors] of [
      [halfDir, halfTensors],
      [wideDir, widenedTensors],
    ] as const) {
      copyFixtureMeta('bert-tiny-a', dir)
      fs.writeFileSync(path.join(dir, 'model.safetensors'), serializeSafetensors(tensors))
    }
    expect(parseSafetensors(fs.readFileSync(path.join(halfDir, 'model.safetensors'))).tensors.get('pooler.dense.weight')?.dtype).toBe(dtype)
    const a = await loadTextBackbone(halfDir)
    const b = await loadTextBackbone(wideDir)
    const ha = await a.hiddenStates(exp.texts)
    const hb = await b.hiddenStates(exp.texts)
    expect(worstError(ha.hiddenStates, hb.hiddenStates)).toBe(0)
    a.dispose()
    b.dispose()
  })

  it('fingerprint ignores key spelling and unused heads but not weights or preprocessing', () => {
    const regular = fingerprintBackbone(fixtureDir('vit-tiny-b'))
    expect(regular).toMatch(/^[0-9a-f]{64}$/)
    expect(fingerprintBackbone(fixtureDir('vit-tiny-b'), { weightsFile: 'model.hubstyle.safetensors' })).toBe(regular)
    expect(fingerprintBackbone(fixtureDir('bert-tiny-b'), { weightsFile: 'model.hubstyle.safetensors' })).toBe(fingerprintBackbone(fixtureDir('bert-tiny-b')))
    expect(fingerprintBackbone(fixtureDir('bert-tiny-sharp'))).not.toBe(fingerprintBackbone(fixtureDir('bert-tiny-a')))

    const dir = tmp('prep')
    copyFixtureMeta('vit-tiny-a', dir)
    fs.copyFileSync(path.join(fixtureDir('vit-tiny-a'), 'model.safetensors'), path.join(dir, 'model.safetensors'))
    expect(fingerprintBackbone(dir)).toBe(fingerprintBackbone(fixtureDir('vit-tiny-a')))
    fs.writeFileSync(path.join(dir, 'preprocessor_config.json'), JSON.stringify({ image_mean: [0.485, 0.456, 0.406], image_std: [0.229, 0.224, 0.225] }))
    expect(fingerprintBackbone(dir)).not.toBe(fingerprintBackbone(fixtureDir('vit-tiny-a')))
  })
})

describe('errors name what is wrong', () => {
  const tensors = (name: string): Record<string, TensorToWrite> => {
    const parsed = parseSafetensors(fs.readFileSync(path.join(fixtureDir(name), 'model.safetensors')))
    const out: Record<string, TensorToWrite> = {}
    for (const [n, e] of parsed.tensors) out[n] = { dtype: 'F32', shape: e.shape, data: toFloat32(e) }
    return out
  }

  it('bad folders', async () => {
    await expect(loadTextBackbone('/nonexistent/bert')).rejects.toThrow(/\/nonexistent\/bert does not exist/)
    const empty = tmp('empty')
    await expect(loadTextBackbone(empty)).rejects.toThrow(/has no config\.json/)
    const noWeights = tmp('noweights')
    copyFixtureMeta('bert-tiny-a', noWeights)
    await expect(loadTextBackbone(noWeights)).rejects.toThrow(/no model\.safetensors/)
    await expect(loadTextBackbone(fixtureDir('vit-tiny-a'))).rejects.toThrow(/vit checkpoint, expected a BERT/)
    await expect(loadImageBackbone(fixtureDir('bert-tiny-a'))).rejects.toThrow(/bert checkpoint, expected a ViT/)
    const garbage = tmp('garbage')
    copyFixtureMeta('vit-tiny-a', garbage)
    fs.writeFileSync(path.join(garbage, 'model.safetensors'), 'not a safetensors file at all')
    await expect(loadImageBackbone(garbage)).rejects.toThrow(/not a valid safetensors file/)
  })

  it('a missing tensor', async () => {
    const dir = tmp('missing')
    copyFixtureMeta('bert-tiny-a', dir)
    const t = tensors('bert-tiny-a')
    delete t['encoder.layer.2.attention.self.key.weight']
    fs.writeFileSync(path.join(dir, 'model.safetensors'), serializeSafetensors(t))
    await expect(loadTextBackbone(dir)).rejects.toThrow(/missing tensor "encoder\.layer\.2\.attention\.self\.key\.weight" \(expected shape \[64, 64\]\)/)
  })

  it('a checkpoint that does not fit config.json', async () => {
    const dir = tmp('mismatch')
    copyFixtureMeta('vit-tiny-a', dir)
    fs.copyFileSync(path.join(fixtureDir('vit-tiny-a'), 'model.safetensors'), path.join(dir, 'model.safetensors'))
    const config = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'))
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ ...config, intermediate_size: 100 }))
    await expect(loadImageBackbone(dir)).rejects.toThrow(
      /tensor "encoder\.layer\.0\.intermediate\.dense\.weight" has shape \[128, 64\] but config\.json implies \[100, 64\]/,
    )
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ ...config, num_hidden_layers: 4 }))
    await expect(loadImageBackbone(dir)).rejects.toThrow(/missing tensor "encoder\.layer\.3\.layernorm_before\.weight"/)
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ ...config, hidden_act: 'gelu_new' }))
    await expect(loadImageBackbone(dir)).rejects.toThrow(/hidden_act "gelu_new" is not supported/)
  })
})

describe('batches', () => {
  it('a corrupt or unreadable image fails alone; the others are encoded', async () => {
    const exp = readExpected<VitExpected>('vit-tiny-a')
    const bb = await loadImageBackbone(fixtureDir('vit-tiny-a'))
    const good = await Promise.all([0, 1, 2].map((i) => fixturePng(exp, i)))
    const truncated = good[1].subarray(0, Math.floor(good[1].length / 2))
    const inputs = [good[0], Buffer.from('definitely not an image'), truncated, '/nonexistent/photo.jpg', good[1], good[2]]
    const results = await bb.encodeImages(inputs, { batchSize: 4 })
    expect(results.map((r) => r.ok)).toEqual([true, false, false, false, true, true])
    expect(results[1]).toMatchObject({ ok: false, error: expect.stringMatching(/cannot decode image .*unsupported image format/) })
    expect(results[2]).toMatchObject({ ok: false, error: expect.stringMatching(/cannot decode image/) })
    expect(results[3]).toMatchObject({ ok: false, error: 'cannot read image /nonexistent/photo.jpg: ENOENT' })
    const L1 = bb.numLayers + 1
    const d = bb.hiddenSize
    const expected = itemMajor(exp.cls_per_layer)
    ;[0, 4, 5].forEach((at, i) => {
      const r = results[at]
      if (!r.ok) throw new Error(r.error)
      expect(worstError(r.cls, expected.subarray(i * L1 * d, (i + 1) * L1 * d))).toBeLessThanOrEqual(TOL)
    })
    bb.dispose()
  })

  it('tfjs: keeps tf.memory() flat across batches and calls', async () => {
    const text = await loadTextBackbone(fixtureDir('bert-tiny-a'), { runtime: 'tfjs' })
    const image = await loadImageBackbone(fixtureDir('vit-tiny-a'), { runtime: 'tfjs' })
    const titles = readExpected<BertExpected>('bert-tiny-a').texts
    const many = Array.from({ length: 1000 }, (_, i) => `${titles[i % titles.length]} ${i}`)
    const vexp = readExpected<VitExpected>('vit-tiny-a')
    const pngs = await Promise.all(vexp.images_u8_hwc.map((_, i) => fixturePng(vexp, i)))
    const images = Array.from({ length: 120 }, (_, i) => (i % 13 === 5 ? Buffer.from('corrupt') : pngs[i % pngs.length]))

    const baseline = tf.memory().numTensors
    const baselineBytes = tf.memory().numBytes
    const seen: number[] = []
    for (let round = 0; round < 3; round++) {
      await text.encodeTexts(many, { batchSize: 64, onProgress: () => seen.push(tf.memory().numTensors) })
      await image.encodeImages(images, { batchSize: 8, onProgress: () => seen.push(tf.memory().numTensors) })
      await text.hiddenStates(titles)
      await image.hiddenStates(Float32Array.from(vexp.pixel_values.flat(3)), vexp.pixel_values.length)
    }
    expect(new Set(seen)).toEqual(new Set([baseline]))
    expect(tf.memory().numTensors).toBe(baseline)
    expect(tf.memory().numBytes).toBe(baselineBytes)
    text.dispose()
    image.dispose()
    expect(tf.memory().numTensors).toBeLessThan(baseline)
  })
})
