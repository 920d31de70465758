// Indexes built once per host and loaded by the other replicas (item-index-store.ts): real
// USearch builds over a synthetic catalogue in a temporary folder. Two builds racing for one
// index are two calls in this process, interleaved at their awaits as two replicas' are at theirs.
import { afterAll, describe, expect, it } from 'vitest'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { storedApproximateIndex, type IndexStore } from '@iisan/model/item-index-store'
import { matrixRows, type ApproximateItemIndex } from '@iisan/model/item-index'
import { ServingModel, sasRecIdConfig, SequentialRecommender, saveCheckpoint, initBackend } from '@iisan/model'
import { readBack } from '@iisan/tensor-ops'
import { clusteredCatalogue, gaussian } from '../bench/lib/synthetic-catalogue.ts'

const D = 64
const N = 4_000
const options = { threads: 1 }
const folders: string[] = []
afterAll(() => {
  for (const dir of folders) fs.rmSync(dir, { recursive: true, force: true })
})

function store(maxFiles?: number): IndexStore {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iisan-index-store-'))
  folders.push(dir)
  return { dir, ...(maxFiles === undefined ? {} : { maxFiles }) }
}

const files = (s: IndexStore, suffix = '.usearch') => fs.readdirSync(s.dir).filter((name) => name.endsWith(suffix))

/** The answers of `index` to 30 fixed queries: equal for the same graph, whoever built it. */
function answers(index: ApproximateItemIndex): number[][] {
  const g = gaussian(3)
  return Array.from({ length: 30 }, () => index.search(Float32Array.from({ length: D }, g), 10).map((s) => s.index))
}

describe('indexes shared through a folder', () => {
  const matrix = clusteredCatalogue(N, D, 1)

  it('two replicas asking at once: one builds and saves, the other waits and loads the same graph', async () => {
    const s = store()
    const [a, b] = await Promise.all([
      storedApproximateIndex(matrixRows(matrix, D), D, options, s, { pollMs: 10 }),
      storedApproximateIndex(matrixRows(matrix, D), D, options, s, { pollMs: 10 }),
    ])
    expect([a.source, b.source].sort()).toEqual(['built', 'loaded'])
    // both map the one file: the builder swapped its own copy for it once saved
    expect([a.index.mapped, b.index.mapped]).toEqual([true, true])
    expect(files(s)).toHaveLength(1)
    expect(files(s, '.lock')).toEqual([])
    expect(b.index.size).toBe(N)
    expect(answers(b.index)).toEqual(answers(a.index))
    // a restart finds it too, and a loaded index takes cold-start appends like a built one
    const again = await storedApproximateIndex(matrixRows(matrix, D), D, options, s)
    expect(again.source).toBe('loaded')
    const fresh = Float32Array.from(matrix.subarray(7 * D, 8 * D), (x) => x * 50)
    again.index.append(fresh, N + 1)
    expect(again.index.search(fresh, 1)[0].index).toBe(N + 1)
  })

  it('a mapped graph takes no inserts: every appended row is scored exactly, past exactTail too', async () => {
    const s = store()
    await storedApproximateIndex(matrixRows(matrix, D), D, options, s)
    const { index } = await storedApproximateIndex(matrixRows(matrix, D), D, { ...options, exactTail: 2 }, s)
    expect(index.mapped).toBe(true)
    // 40 rows, each a catalogue row made 30× as long: they win any inner product they point along
    const g = gaussian(9)
    const appended = Float32Array.from({ length: 40 * D }, (_, i) => matrix[D + ((i * 7) % (N * D))]! * 30 + g() * 0.01)
    index.append(appended, N + 1)
    expect(index.size).toBe(N + 40)
    for (let r = 0; r < 40; r++) {
      const query = appended.subarray(r * D, (r + 1) * D)
      // the exact top 5 over everything, by brute force
      const all = [...Array.from({ length: N }, (_, i) => matrix.subarray((i + 1) * D, (i + 2) * D)), ...Array.from({ length: 40 }, (_, i) => appended.subarray(i * D, (i + 1) * D))]
      const exact = all
        .map((row, i) => ({ index: i + 1, score: row.reduce((sum, x, d) => sum + x * query[d]!, 0) }))
        .sort((a, b) => b.score - a.score || a.index - b.index)
        .slice(0, 5)
        .map((e) => e.index)
      expect(index.search(query, 5).map((f) => f.index)).toEqual(exact)
    }
  })

  it('other rows, or other options, are another index: never loaded in place of their own', async () => {
    const s = store()
    await storedApproximateIndex(matrixRows(matrix, D), D, options, s)
    const changed = matrix.slice()
    changed[N * D] += 1e-3 // one value of the last row
    expect((await storedApproximateIndex(matrixRows(changed, D), D, options, s)).source).toBe('built')
    expect((await storedApproximateIndex(matrixRows(matrix, D), D, { ...options, metric: 'cos' }, s)).source).toBe('built')
    expect((await storedApproximateIndex(matrixRows(matrix, D), D, { ...options, quantization: 'f32' }, s)).source).toBe('built')
    expect(files(s)).toHaveLength(4)
  })

  it('a damaged file is deleted and the index built again', async () => {
    const s = store()
    const first = await storedApproximateIndex(matrixRows(matrix, D), D, options, s)
    // read before the file is damaged under it: a mapped index reads its file (a mapping of a
    // file cut short faults; the store never changes a file in place, it writes another and renames)
    const expected = answers(first.index)
    first.index.dispose?.()
    const [name] = files(s)
    const file = path.join(s.dir, name)
    // cut short (USearch itself does not check: it crashed the process on this file), then a byte changed
    fs.truncateSync(file, 1000)
    const second = await storedApproximateIndex(matrixRows(matrix, D), D, options, s)
    expect(second.source).toBe('built')
    expect(answers(second.index)).toEqual(expected)
    second.index.dispose?.()
    // saved again, whole (under the hash of its new bytes: no two builds write the same bytes)
    const [rebuilt] = files(s)
    const bytes = fs.statSync(path.join(s.dir, rebuilt)).size
    expect(bytes).toBeGreaterThan(N * D * 4)
    const fd = fs.openSync(path.join(s.dir, rebuilt), 'r+')
    fs.writeSync(fd, Buffer.from([0xff, 0xff, 0xff, 0xff]), 0, 4, Math.floor(bytes / 2))
    fs.closeSync(fd)
    expect((await storedApproximateIndex(matrixRows(matrix, D), D, options, s)).source).toBe('built')
    expect(files(s)).toHaveLength(1)
    expect(files(s)).not.toContain(rebuilt)
  })

  it('waits while another holds the lock, takes over a lock left stale, and gives up when cancelled', async () => {
    const s = store()
    await storedApproximateIndex(matrixRows(matrix, D), D, options, s)
    const [name] = files(s)
    const saved = path.join(s.dir, name)
    const lock = path.join(s.dir, `${name.split('.')[0]}.lock`)
    const copy = `${saved}.copy`
    fs.renameSync(saved, copy)
    // a live builder: fresh lock, no file yet
    fs.writeFileSync(lock, '1\n')
    let settled = false
    const waiting = storedApproximateIndex(matrixRows(matrix, D), D, options, s, { pollMs: 10, lockStaleMs: 60_000 }).then((r) => {
      settled = true
      return r
    })
    await new Promise((resolve) => setTimeout(resolve, 300))
    expect(settled).toBe(false)
    // the builder finishes: file in place, lock gone
    fs.renameSync(copy, saved)
    fs.rmSync(lock)
    expect((await waiting).source).toBe('loaded')

    // a builder that died: its lock is older than lockStaleMs
    const removeSaved = () => files(s).forEach((f) => fs.rmSync(path.join(s.dir, f)))
    removeSaved()
    fs.writeFileSync(lock, '1\n')
    const old = new Date(Date.now() - 10_000)
    fs.utimesSync(lock, old, old)
    expect((await storedApproximateIndex(matrixRows(matrix, D), D, options, s, { pollMs: 10, lockStaleMs: 5_000 })).source).toBe('built')

    // cancelled while waiting on a live lock
    removeSaved()
    fs.writeFileSync(lock, '1\n')
    let cancelled = false
    const abandoned = storedApproximateIndex(matrixRows(matrix, D), D, { ...options, isCancelled: () => cancelled }, s, { pollMs: 10 })
    setTimeout(() => (cancelled = true), 50)
    await expect(abandoned).rejects.toThrow(/cancelled/)
  })

  it('a folder that cannot be used costs the sharing, not the index', async () => {
    const s = store()
    const file = path.join(s.dir, 'a-file')
    fs.writeFileSync(file, '')
    // a folder under a file: mkdir fails (ENOTDIR), as it would on a read-only or missing mount
    const { index, source } = await storedApproximateIndex(matrixRows(matrix, D), D, options, { dir: path.join(file, 'indexes') })
    expect(source).toBe('built')
    expect(index.size).toBe(N)
  })

  it('keeps the most recently used files up to maxFiles', async () => {
    const s = store(2)
    const variants = [1, 2, 3].map((seed) => clusteredCatalogue(500, D, seed))
    for (const m of variants) await storedApproximateIndex(matrixRows(m, D), D, options, s)
    expect(files(s)).toHaveLength(2)
    // the first was dropped: it is built again; the third is still there
    expect((await storedApproximateIndex(matrixRows(variants[2], D), D, options, s)).source).toBe('loaded')
    expect((await storedApproximateIndex(matrixRows(variants[0], D), D, options, s)).source).toBe('built')
  })
})

describe('ServingModel with an index store', () => {
  it('the second copy of a version loads both indexes the first built, and answers the same', async () => {
    await initBackend({ prefer: 'wasm' })
    const model = new SequentialRecommender(sasRecIdConfig(3000, { seed: 5 }))
    const matrix = readBack(() => model.itemMatrix())
    const weights = saveCheckpoint(model.params, model.config)
    const s = store()
    const first = ServingModel.load(weights, matrix, { approximateFrom: Infinity, index: options, indexStore: s })
    await first.buildIndex()
    const second = ServingModel.load(weights, matrix, { approximateFrom: Infinity, index: options, indexStore: s })
    await second.buildIndex()
    expect([first.indexSources, second.indexSources]).toEqual([
      ['built', 'built'],
      ['loaded', 'loaded'],
    ])
    expect(files(s)).toHaveLength(2)
    const histories = Array.from({ length: 20 }, (_, i) => [1 + i, 100 + i, 2000 + i])
    const requests = histories.map((history) => ({ history, k: 10 }))
    expect(second.recommendMany(requests)).toEqual(first.recommendMany(requests))
    const similar = histories.map((h) => ({ index: h[0], k: 10 }))
    expect(second.similarMany(similar)).toEqual(first.similarMany(similar))
    first.dispose()
    second.dispose()
    model.dispose()
  })
})
