// Small, real slices of the Scientific dataset for fast tests: the first N users and only the
// items they touch (README of ../shared/datasets).
import { readFileSync } from 'node:fs'
import path from 'node:path'

export const SCIENTIFIC_DIR = path.resolve(process.cwd(), '../shared/datasets/scientific')

export function scientificSlice(numUsers: number): { itemsTsv: string; usersTsv: string; userLines: string[]; itemIds: string[] } {
  const userLines = readFileSync(path.join(SCIENTIFIC_DIR, 'users.tsv'), 'utf8').split('\n').filter(Boolean).slice(0, numUsers)
  const touched = new Set(userLines.flatMap((l) => l.split('\t')[1].split(' ')))
  const itemLines = readFileSync(path.join(SCIENTIFIC_DIR, 'items.tsv'), 'utf8')
    .split('\n')
    .filter((l) => touched.has(l.split('\t')[0]))
  return { itemsTsv: itemLines.join('\n') + '\n', usersTsv: userLines.join('\n') + '\n', userLines, itemIds: itemLines.map((l) => l.split('\t')[0]) }
}
