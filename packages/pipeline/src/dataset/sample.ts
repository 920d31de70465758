// The embedded default data: the first N users of a dataset folder (items.tsv + users.tsv) and
// only the items they touch. Used by the quick start, benchmarks and tests.
import { readFileSync } from 'node:fs'
import path from 'node:path'

/** The Scientific dataset shipped in the repository (data/scientific, see its README), wherever the process runs from. */
export const SCIENTIFIC_DIR = path.resolve(import.meta.dirname, '../../../../data/scientific')

export interface DatasetSample {
  itemsTsv: string
  usersTsv: string
  userLines: string[]
  itemIds: string[]
}

export function sampleDataset(numUsers: number, dir = SCIENTIFIC_DIR): DatasetSample {
  const userLines = readFileSync(path.join(dir, 'users.tsv'), 'utf8').split('\n').filter(Boolean).slice(0, numUsers)
  const touched = new Set(userLines.flatMap((l) => l.split('\t')[1].split(' ')))
  const itemLines = readFileSync(path.join(dir, 'items.tsv'), 'utf8')
    .split('\n')
    .filter((l) => touched.has(l.split('\t')[0]))
  return { itemsTsv: itemLines.join('\n') + '\n', usersTsv: userLines.join('\n') + '\n', userLines, itemIds: itemLines.map((l) => l.split('\t')[0]) }
}
