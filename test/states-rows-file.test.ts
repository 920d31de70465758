// Cached states in a rows file (issue 12: peak RSS): the training job streams the cache's float16
// side layers into an unlinked temporary file and reads each batch's rows back with pread, instead
// of holding every row in memory. The file itself (round trip, bounds, closing, nothing left on
// disk), the batch gather against the same rows in memory, and training on it: the same losses as
// from memory, bit for bit, on one thread and on two (which read through the shared descriptor);
// on wasm and cpu.
import fs from 'node:fs'
import os from 'node:os'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  SequentialRecommender,
  buildProtocol,
  closeStates,
  gatherSideLayers,
  getMethod,
  initBackend,
  mulberry32,
  tf,
  train,
  type CachedStates,
  type ModalityStates,
} from '@iisan/model'
import { float32ToFloat16 } from '@iisan/safetensors'
import { Float16RowsFile } from '@iisan/safetensors/float16-rows-file'

const ITEMS = 40
const random = mulberry32(21)
const users = Array.from({ length: 40 }, (_, u) => ({ key: `u${u}`, items: Array.from({ length: 7 }, () => String(1 + Math.floor(random() * ITEMS))) }))
const data = buildProtocol(users, Array.from({ length: ITEMS }, (_, i) => String(i + 1)), { maxSeqLen: 5, minInteractions: 5 })
const OPTIONS = { maxEpochs: 1, batchSize: 8, patience: 3, seed: 2, lrItem: 1e-3, lrUser: 1e-3, lrTextEncoder: 1e-3, lrImageEncoder: 1e-3, lrTextAdapters: 1e-3, lrImageAdapters: 1e-3 }
const opened: Float16RowsFile[] = []

beforeAll(async () => {
  await initBackend({ prefer: 'wasm' })
  await import('@tensorflow/tfjs-backend-cpu')
})

afterAll(() => opened.forEach((f) => f.close()))

/** Random float16 states for items 1..ITEMS (`absent` items lack the modality), rows in reverse item order so that row ≠ item. */
function memoryStates(L: number, d: number, seed: number, absent: (item: number) => boolean): ModalityStates & { data: Uint16Array } {
  const r = mulberry32(seed)
  const present = Array.from({ length: ITEMS }, (_, i) => ITEMS - i).filter((item) => !absent(item))
  const rowOf = new Int32Array(ITEMS + 1).fill(-1)
  present.forEach((item, row) => (rowOf[item] = row))
  const data = float32ToFloat16(Float32Array.from({ length: present.length * (L + 1) * d }, () => r() * 2 - 1))
  return { numLayers: L, width: d, rowOf, data }
}

/** The same rows in a rows file. */
function onDisk(states: ModalityStates & { data: Uint16Array }): ModalityStates {
  const perRow = (states.numLayers + 1) * states.width
  const file = Float16RowsFile.create(states.data.length / perRow, perRow)
  opened.push(file)
  file.write(0, new Uint8Array(states.data.buffer, states.data.byteOffset, states.data.byteLength))
  return { ...states, data: file }
}

function cached(): { memory: CachedStates; file: CachedStates } {
  const text = memoryStates(4, 12, 7, (i) => i % 13 === 0)
  const image = memoryStates(4, 8, 8, (i) => i % 5 === 0)
  return { memory: { text, image }, file: { text: onDisk(text), image: onDisk(image) } }
}

describe('Float16RowsFile', () => {
  it('gives back the rows written, in any order, and refuses what is out of bounds', () => {
    const file = Float16RowsFile.create(5, 3)
    opened.push(file)
    expect([file.rows, file.valuesPerRow, file.length]).toEqual([5, 3, 15])
    file.write(3, new Uint8Array(Uint16Array.of(1, 2, 3, 4, 5, 6).buffer))
    file.write(0, new Uint8Array(Uint16Array.of(65535, 0, 7).buffer))
    const row = new Uint16Array(3)
    const read = (r: number) => (file.readRow(r, row), Array.from(row))
    expect([read(4), read(0), read(3), read(1)]).toEqual([[4, 5, 6], [65535, 0, 7], [1, 2, 3], [0, 0, 0]])
    expect(() => file.readRow(5, row)).toThrow(/row 5 outside the file's 5/)
    expect(() => file.readRow(0, new Uint16Array(2))).toThrow(/a row holds 3 values/)
    expect(() => file.write(4, new Uint8Array(12))).toThrow(/outside the file's 5/)
    expect(() => file.write(0, new Uint8Array(5))).toThrow(/not whole rows of 6/)
    expect(() => Float16RowsFile.create(2, 0)).toThrow(/values per row > 0/)
  })

  it('is unlinked from the start, and closing it gives the descriptor back', () => {
    const before = new Set(fs.readdirSync(os.tmpdir()))
    const file = Float16RowsFile.create(4, 2)
    expect(fs.readdirSync(os.tmpdir()).filter((f) => !before.has(f))).toEqual([])
    const fd = file.fd
    expect(fs.fstatSync(fd).size).toBe(16)
    expect(fs.fstatSync(fd).nlink).toBe(0)
    // a view attached by handle (as a SAN thread does) reads the same file, and does not close it
    const attached = Float16RowsFile.attach(file.handle)
    file.write(2, new Uint8Array(Uint16Array.of(9, 8).buffer))
    const row = new Uint16Array(2)
    attached.readRow(2, row)
    expect(Array.from(row)).toEqual([9, 8])
    attached.close()
    expect(fs.fstatSync(fd).size).toBe(16)
    closeStates({ text: { numLayers: 0, width: 2, rowOf: new Int32Array(5), data: file }, image: { numLayers: 0, width: 2, rowOf: new Int32Array(5), data: new Float32Array(0) } })
    expect(() => fs.fstatSync(fd)).toThrow(/EBADF/)
    expect(() => file.readRow(0, row)).toThrow(/the rows file is closed/)
    file.close()
  })
})

for (const backend of ['wasm', 'cpu'] as const) {
  describe(`IISAN on states in a rows file (${backend})`, () => {
    beforeAll(async () => {
      await tf.setBackend(backend)
      await tf.ready()
    })

    it('a batch gathers the same side layers as from memory, absent items included', () => {
      const { memory, file } = cached()
      const ids = Int32Array.of(0, 1, 5, 13, 40, 26, 5, 39)
      for (const m of ['text', 'image'] as const) {
        const a = gatherSideLayers(memory[m], ids, [0, 2, 4])
        const b = gatherSideLayers(file[m], ids, [0, 2, 4])
        expect(Array.from(b.present)).toEqual(Array.from(a.present))
        expect(b.slices.map((s) => Array.from(s))).toEqual(a.slices.map((s) => Array.from(s)))
      }
    })

    const run = async (states: CachedStates, trainThreads: number) => {
      const method = getMethod('iisan')
      const config = method.modelConfig(data.numItems, { embeddingDim: 16, numBlocks: 1, numHeads: 2, maxSeqLen: 5, dropout: 0.2, seed: 4, reduction: 4, trainThreads }, { states })
      const model = new SequentialRecommender(config, { states })
      const losses: number[] = []
      try {
        const result = await train(model, data, OPTIONS, { onStep: (s) => void losses.push(s.loss) })
        return { losses, hr10: result.test.hr10 }
      } finally {
        model.dispose()
      }
    }

    // the SAN trains on ONNX Runtime by default (two ORT threads: intra-op), on tfjs where it is
    // not used (two threads: a SAN thread reading the file through the shared descriptor)
    it.each(['onnx', 'tfjs'])('trains to the same losses as from memory, on one thread and on two (SAN on %s)', { timeout: 60_000 }, async (runtime) => {
      const before = process.env.BACKBONE_RUNTIME
      process.env.BACKBONE_RUNTIME = runtime
      try {
        const { memory, file } = cached()
        const fromMemory = await run(memory, 1)
        const fromFile = await run(file, 1)
        expect(fromMemory.losses).toHaveLength(5)
        expect(fromFile).toEqual(fromMemory)
        const twoThreads = await run(file, 2)
        twoThreads.losses.forEach((loss, i) => expect(Math.abs(loss - fromMemory.losses[i]), `step ${i + 1}`).toBeLessThan(1e-5))
        expect(tf.getBackend()).toBe(backend)
      } finally {
        if (before === undefined) delete process.env.BACKBONE_RUNTIME
        else process.env.BACKBONE_RUNTIME = before
      }
    })
  })
}
