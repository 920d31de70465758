// `npm run bench:efficiency` — TPME (docs/METHOD.md §8) across the measured training runs in
// bench/results (run `npm run bench:train -- --method iisan|sasrec-id` first) and the authors'
// cached IISAN as REFERENCE figures, not measured by this script: their Code_Cached run with torch
// 1.13 + OpenBLAS on 2 threads on this kind of machine (AMD EPYC, 2 cores, December 2026), as
// quoted in issue #10. Its rows say so in `source`; only rows read from bench/results are measured. Prints a table, writes efficiency.json and an SVG
// bar chart of the normalised axes and TPME.
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { tpme, PAPER_TPME_WEIGHTS, type EfficiencyFigures } from '@iisan/model/tpme'
import { STEP_BENCH_METHODS } from './method-choice.ts'

const RESULTS = 'bench/results'
interface TrainBench {
  method: string
  epoch_s: number
  trainable_params: number
  peak_rss_mb: number
  eval_s: number | null
  median_step_s: number
  /** where the item side trained (absent in results written before it was recorded: tfjs) */
  training_runtime?: string
}

const rows: (EfficiencyFigures & { label: string; source: string; evalSeconds: number | null })[] = []
for (const method of STEP_BENCH_METHODS) {
  const file = `${RESULTS}/train-${method}.json`
  if (!existsSync(file)) {
    console.error(`error: ${file} is missing; run: npm run bench:train -- --method ${method}`)
    process.exit(1)
  }
  const b = JSON.parse(readFileSync(file, 'utf8')) as TrainBench
  rows.push({ id: method, label: `${method} (this platform, ${b.training_runtime === 'onnx' ? 'tfjs-wasm + ONNX Runtime' : 'tfjs-wasm'})`, source: file, secondsPerEpoch: b.epoch_s, trainableParams: b.trainable_params, peakMemoryMb: b.peak_rss_mb, evalSeconds: b.eval_s })
}
// Same configuration as train-iisan.json. Reference, not measured here: 0.81 s per step × the
// epoch's steps, 39.1 s evaluation, 865 MB peak RSS, their 4,113,877 parameters (ours add the
// learned missing-modality states).
const AUTHORS_REFERENCE = { stepSeconds: 0.81, evalSeconds: 39.1, peakRssMb: 865, trainableParams: 4_113_877 }
const stepsPerEpoch = rows[0].secondsPerEpoch / (JSON.parse(readFileSync(`${RESULTS}/train-iisan.json`, 'utf8')) as TrainBench).median_step_s
rows.push({
  id: 'iisan-pytorch',
  label: 'iisan (authors’ cached PyTorch, reference)',
  source: 'reference figures (issue #10: Code_Cached, torch 1.13 + OpenBLAS, 2 threads, AMD EPYC 2 cores); not measured by this bench',
  secondsPerEpoch: AUTHORS_REFERENCE.stepSeconds * stepsPerEpoch,
  trainableParams: AUTHORS_REFERENCE.trainableParams,
  peakMemoryMb: AUTHORS_REFERENCE.peakRssMb,
  evalSeconds: AUTHORS_REFERENCE.evalSeconds,
})

const scored = tpme(rows, PAPER_TPME_WEIGHTS).map((r, i) => ({ ...rows[i], ...r }))
console.table(
  Object.fromEntries(
    scored.map((r) => [
      r.label,
      { 's/epoch': +r.secondsPerEpoch.toFixed(1), 'eval s': r.evalSeconds === null ? '-' : +r.evalSeconds.toFixed(1), params: r.trainableParams, 'peak MB': Math.round(r.peakMemoryMb), TPME: +r.tpme.toFixed(3) },
    ]),
  ),
)
writeFileSync(`${RESULTS}/efficiency.json`, JSON.stringify({ weights: PAPER_TPME_WEIGHTS, rows: scored }, null, 2))
writeFileSync(`${RESULTS}/efficiency.svg`, barChart(scored))
console.log(`wrote ${RESULTS}/efficiency.json and ${RESULTS}/efficiency.svg`)

/** Grouped bars: normalised time, params, memory and TPME per method (lower is better). */
function barChart(data: typeof scored): string {
  const axes = [
    ['time/epoch', (r: (typeof data)[number]) => r.timeNorm],
    ['params', (r: (typeof data)[number]) => r.paramsNorm],
    ['peak memory', (r: (typeof data)[number]) => r.memoryNorm],
    ['TPME', (r: (typeof data)[number]) => r.tpme],
  ] as const
  const colours = ['#3b5bdb', '#2b8a3e', '#e67700', '#868e96']
  const width = 820
  const height = 320
  const left = 60
  const bottom = 260
  const groupWidth = (width - left - 20) / axes.length
  const barWidth = (groupWidth - 30) / data.length
  const bars = axes
    .map(([name, value], g) => {
      const x0 = left + g * groupWidth + 15
      const group = data
        .map((r, i) => {
          const h = Math.max(1, value(r) * 200)
          return `<rect x="${(x0 + i * barWidth).toFixed(1)}" y="${(bottom - h).toFixed(1)}" width="${(barWidth - 4).toFixed(1)}" height="${h.toFixed(1)}" fill="${colours[i % colours.length]}"><title>${r.label}: ${value(r).toFixed(3)}</title></rect>`
        })
        .join('')
      return `${group}<text x="${(x0 + (groupWidth - 30) / 2).toFixed(1)}" y="${bottom + 20}" text-anchor="middle">${name}</text>`
    })
    .join('')
  const legend = data.map((r, i) => `<rect x="${left + i * 250}" y="295" width="12" height="12" fill="${colours[i % colours.length]}"/><text x="${left + i * 250 + 18}" y="306">${r.label}</text>`).join('')
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="12">
<text x="${left}" y="24" font-size="14" font-weight="bold">Training efficiency, min–max normalised across methods (lower is better)</text>
<line x1="${left}" y1="${bottom}" x2="${width - 20}" y2="${bottom}" stroke="#333"/><line x1="${left}" y1="${bottom - 200}" x2="${left}" y2="${bottom}" stroke="#333"/>
<text x="${left - 8}" y="${bottom - 196}" text-anchor="end">1</text><text x="${left - 8}" y="${bottom + 4}" text-anchor="end">0</text>
${bars}${legend}</svg>\n`
}
