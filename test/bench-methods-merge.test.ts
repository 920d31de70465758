// bench:methods run on some methods keeps the other methods' rows of the same size, each labelled
// with the run that measured it (bench/lib/methods-merge.ts).
import { describe, expect, it } from 'vitest'
import { mergeRows } from '../bench/lib/methods-merge.ts'
import { METHOD_NAMES } from '@iisan/model'

interface Row {
  method: string
  medianStepSeconds?: number
  failed?: string
  loadAverage?: [number, number]
  run?: { date: string; command: string; loadAverage?: [number, number] }
}

const EARLIER_COMMAND = 'npm run bench:methods -- --size base --steps 5 --content-batch 2'
const earlierFile = { date: '2026-12-06T20:31:17.018Z', command: EARLIER_COMMAND }
const earlierSection = {
  date: '2026-12-06T20:31:16.878Z',
  command: EARLIER_COMMAND,
  rows: [
    { method: 'sasrec-id', medianStepSeconds: 0.05, loadAverage: [2.34, 2.34] },
    { method: 'iisan', medianStepSeconds: 0.31, loadAverage: [2.34, 2.56] },
    { method: 'fft', failed: 'out of wasm memory' },
    { method: 'lora', medianStepSeconds: 65, loadAverage: [1.19, 1] },
  ] as Row[],
}
const thisRun = { date: '2026-12-06T22:40:00.000Z', command: 'npm run bench:methods -- --size base --methods fft --steps 10 --content-batch 2' }

describe('merging a run of some methods into the earlier rows of its size', () => {
  it("replaces the rows of the methods that ran, keeps the others with the earlier run's label, in the registry's order", () => {
    const fresh: Row[] = [{ method: 'fft', medianStepSeconds: 90, loadAverage: [2.9, 3.1] }]
    const rows = mergeRows(fresh, thisRun, earlierSection, earlierFile, METHOD_NAMES)
    expect(rows.map((r) => r.method)).toEqual(['sasrec-id', 'iisan', 'fft', 'lora'])
    const fft = rows.find((r) => r.method === 'fft')!
    expect(fft.failed).toBeUndefined()
    expect(fft.medianStepSeconds).toBe(90)
    expect(fft.run).toEqual({ ...thisRun, loadAverage: [2.9, 3.1] })
    // rows written before labels existed: the earlier size section's date and command, and the load the row recorded
    expect(rows.find((r) => r.method === 'lora')!.run).toEqual({ date: earlierSection.date, command: EARLIER_COMMAND, loadAverage: [1.19, 1] })
    expect(rows.find((r) => r.method === 'iisan')!.medianStepSeconds).toBe(0.31)
  })

  it('a row already labelled keeps its label through later runs', () => {
    const first = mergeRows([{ method: 'fft', medianStepSeconds: 90 }], thisRun, earlierSection, earlierFile, METHOD_NAMES)
    const later = { date: '2026-12-07T09:00:00.000Z', command: 'npm run bench:methods -- --size base --methods lora' }
    const second = mergeRows<Row>([{ method: 'lora', medianStepSeconds: 60 }], later, { ...later, rows: first }, later, METHOD_NAMES)
    expect(second.find((r) => r.method === 'fft')!.run).toEqual(thisRun)
    expect(second.find((r) => r.method === 'iisan')!.run!.date).toBe(earlierSection.date)
    expect(second.find((r) => r.method === 'lora')!.run).toEqual(later)
    expect(second.find((r) => r.method === 'lora')!.medianStepSeconds).toBe(60)
    // rows merged in from another results file (--merge) arrive labelled and keep their own run
    const merged = mergeRows<Row>(first, later, earlierSection, earlierFile, METHOD_NAMES)
    expect(merged.find((r) => r.method === 'fft')!.run).toEqual(thisRun)
    expect(merged.find((r) => r.method === 'lora')!.run!.date).toBe(earlierSection.date)
  })

  it("unlabelled rows of a section without its own date take the file's top-level date and command; with neither it says so", () => {
    const rows = mergeRows([], thisRun, { rows: [{ method: 'iisan' }] }, earlierFile, METHOD_NAMES)
    expect(rows[0].run).toEqual({ date: earlierFile.date, command: EARLIER_COMMAND })
    expect(() => mergeRows([], thisRun, { rows: [{ method: 'iisan' }] }, {}, METHOD_NAMES)).toThrow(/iisan has no run label/)
  })

  it('a run of every method (or a first run) has only its own rows; methods the registry no longer lists go last', () => {
    const all: Row[] = METHOD_NAMES.map((method) => ({ method, medianStepSeconds: 1 }))
    const rows = mergeRows(all, thisRun, earlierSection, earlierFile, METHOD_NAMES)
    expect(rows.map((r) => r.method)).toEqual(METHOD_NAMES)
    expect(rows.every((r) => r.run.date === thisRun.date)).toBe(true)
    expect(mergeRows([{ method: 'fft' }], thisRun, undefined, undefined, METHOD_NAMES).map((r) => r.method)).toEqual(['fft'])
    const retired = mergeRows([{ method: 'fft' }], thisRun, { ...earlierSection, rows: [{ method: 'old-method' }, { method: 'iisan' }] }, earlierFile, METHOD_NAMES)
    expect(retired.map((r) => r.method)).toEqual(['iisan', 'fft', 'old-method'])
  })
})
