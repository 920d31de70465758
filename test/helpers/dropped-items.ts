/**
 * Which catalogue items the data protocol leaves out, counted here from the raw TSV text rather
 * than by the protocol's own code (docs/METHOD.md §6: users with at least 5 interactions, their last
 * T + 3 = 13 items; items occurring in none of those windows are dropped).
 */
const MIN_INTERACTIONS = 5
const WINDOW = 10 + 3

export interface RawDataset {
  /** catalogue ids in file order */
  catalogue: string[]
  users: { id: string; items: string[] }[]
  dropped: Set<string>
}

export function countDropped(itemsTsv: string, usersTsv: string): RawDataset {
  const catalogue = itemsTsv.split('\n').filter(Boolean).map((line) => line.split('\t')[0])
  const users = usersTsv
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const [id, items] = line.split('\t')
      return { id, items: items.split(' ') }
    })
  const windowed = new Set<string>()
  for (const user of users) {
    if (user.items.length < MIN_INTERACTIONS) continue
    for (const item of user.items.slice(-WINDOW)) windowed.add(item)
  }
  return { catalogue, users, dropped: new Set(catalogue.filter((id) => !windowed.has(id))) }
}

/** Distinct, in order of first occurrence: how the API lists skipped ids. */
export function distinct(ids: string[]): string[] {
  return [...new Set(ids)]
}
