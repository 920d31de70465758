// bench:methods keeps one section per size in bench/results/methods.json. A base-size run of every
// method takes hours, so a run of a few methods (`--methods fft`) must not drop the other methods'
// rows of that size: it replaces the rows of the methods it ran and keeps the rest, each row
// labelled with the run that measured it (rows of different runs were measured under different
// machine loads, and the label says so).

/** The run a row came from. */
export interface RunLabel {
  date: string
  command: string
  /** the 1-minute load average when the method's training started and ended, where the bench recorded it */
  loadAverage?: [number, number]
}

export interface MergeableRow {
  method: string
  run?: RunLabel
  loadAverage?: [number, number]
}

/** The parts of an earlier file (and its size section) the merge reads. */
export interface EarlierRun<R> {
  date?: string
  command?: string
  rows?: R[]
}

/** The label of a row measured by the run `run`, with the row's own load average where it has one. */
export function labelled<R extends MergeableRow>(row: R, run: { date: string; command: string }): R & { run: RunLabel } {
  return { ...row, run: { date: run.date, command: run.command, ...(row.loadAverage ? { loadAverage: row.loadAverage } : {}) } }
}

/**
 * One size's rows after a run: this run's rows (labelled with it, unless merged in already labelled
 * from another results file) and, for every method it did not
 * run, the earlier section's row. An earlier row keeps its label; one written before rows had
 * labels takes the date and command of the earlier size section, else of the earlier file's top
 * level (a section's own date and command are the run that measured its rows, even when the file's
 * top level was rewritten by a run of the other size). Ordered as `order` (the method registry's),
 * methods it does not list last.
 */
export function mergeRows<R extends MergeableRow>(
  fresh: R[],
  run: { date: string; command: string },
  earlierSection: EarlierRun<R> | undefined,
  earlierFile: EarlierRun<never> | undefined,
  order: readonly string[],
): (R & { run: RunLabel })[] {
  const ran = new Set(fresh.map((r) => r.method))
  const fallback = { date: earlierSection?.date ?? earlierFile?.date, command: earlierSection?.command ?? earlierFile?.command }
  const kept = (earlierSection?.rows ?? [])
    .filter((r) => !ran.has(r.method))
    .map((r) => {
      if (r.run) return r as R & { run: RunLabel }
      if (!fallback.date || !fallback.command) throw new Error(`earlier row ${r.method} has no run label and its file no date and command`)
      return labelled(r, { date: fallback.date, command: fallback.command })
    })
  // a fresh row with a label comes from another results file (bench:methods --merge): it keeps it
  const rows = [...fresh.map((r) => (r.run ? (r as R & { run: RunLabel }) : labelled(r, run))), ...kept]
  const rank = (method: string) => (order.includes(method) ? order.indexOf(method) : order.length)
  // a stable sort: methods outside `order` keep the order they came in
  return rows.sort((a, b) => rank(a.method) - rank(b.method))
}
