// `npm run bench:checkpoint -- [--mib N] [--repeats R] [--part-mib P] [--out FILE]`: what it costs to keep a
// training job's resumable state in PostgreSQL, the way the worker does once an epoch, through
// node-postgres in binary (the platform's path) beside Prisma's path (the baseline it replaced),
// in one run on a throwaway database. Each save and each load runs in a fresh child process, so
// its peak RSS is its own: the figure that matters is what a save or a load holds on top of the
// state itself (FFT's state at base shapes is 3.1 GB; the worker holds it already).
// Prints a table and writes bench/results/checkpoint.json (or --out).
import fs from 'node:fs'
import path from 'node:path'
import { execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { dropDatabase, ensureDatabaseExists, withDatabase } from '@iisan/config'
import { parseOptions, positiveInt } from '@iisan/pipeline/cli/args'
import { applyMigrations, createPrisma, createTrainingJob, importDataset, loadTrainingCheckpoint, saveTrainingCheckpoint, type BlobTransportOptions } from '@iisan/storage'
import { loadAverage, machine, machineLine } from './lib/machine.ts'

type Transport = NonNullable<BlobTransportOptions['transport']>
const TRANSPORTS: Transport[] = ['prisma', 'binary']
const REPO = path.resolve(import.meta.dirname, '..')
const USAGE = 'usage: npm run bench:checkpoint -- [--mib N] [--repeats R] [--part-mib P] [--out FILE]'
const MiB = 2 ** 20

interface ChildResult {
  seconds: number
  /** peak RSS of the child, in MiB */
  peakRssMib: number
  /** peak RSS minus what the child held before the save (state included) or before the load */
  transientMib: number
}

/** A recognisable state: the load checks it byte for byte, on top of the store's own sha256. */
function stateOf(bytes: number): Uint8Array {
  const state = new Uint8Array(bytes)
  for (let i = 0; i < bytes; i += 4096) state[i] = (i / 4096) % 251
  return state
}

async function child(role: 'save' | 'load', dbUrl: string, jobId: string, transport: Transport, mib: number, partMib: number): Promise<void> {
  const prisma = createPrisma(dbUrl, { maxConnections: 2 })
  try {
    // the save's state, or what the load must give back: both held before the measurement starts
    const state = stateOf(mib * MiB)
    const before = process.memoryUsage().rss
    const start = performance.now()
    if (role === 'save') {
      await saveTrainingCheckpoint(prisma, { jobId, epoch: 1, state, meta: {} }, { transport, partBytes: partMib * MiB })
    } else {
      const loaded = await loadTrainingCheckpoint(prisma, jobId, { transport })
      // views, not copies: Buffer.from(a Uint8Array) would copy a gigabyte into the measurement
      const view = (bytes: Uint8Array) => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
      if (!loaded || !view(loaded.state).equals(view(state))) throw new Error('the loaded state differs from the saved one')
    }
    const seconds = (performance.now() - start) / 1000
    const peak = (process.resourceUsage().maxRSS * 1024) / MiB
    // a load's result is part of what it must hold; the transient is what comes on top of it
    const transientMib = peak - before / MiB - (role === 'load' ? mib : 0)
    process.stdout.write(`${JSON.stringify({ seconds, peakRssMib: peak, transientMib } satisfies ChildResult)}\n`)
  } finally {
    await prisma.$disconnect()
  }
}

function runChild(role: 'save' | 'load', dbUrl: string, jobId: string, transport: Transport, mib: number, partMib: number): ChildResult {
  const out = execFileSync(process.execPath, ['--import', 'tsx', import.meta.filename, '--child', role, '--db', dbUrl, '--job', jobId, '--transport', transport, '--mib', String(mib), '--part-mib', String(partMib)], {
    cwd: REPO,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
    maxBuffer: 1 << 20,
  })
  return JSON.parse(out.trim().split('\n').at(-1)!) as ChildResult
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!

async function main(): Promise<void> {
  const { values } = parseOptions(
    {
      mib: { type: 'string', default: '1024' },
      repeats: { type: 'string', default: '3' },
      'part-mib': { type: 'string', default: '128' },
      out: { type: 'string' },
      child: { type: 'string' },
      db: { type: 'string' },
      job: { type: 'string' },
      transport: { type: 'string' },
    },
    USAGE,
  )
  const mib = positiveInt('mib', values.mib)
  const partMib = positiveInt('part-mib', values['part-mib'])
  if (values.child) {
    await child(values.child as 'save' | 'load', values.db!, values.job!, values.transport as Transport, mib, partMib)
    return
  }
  const repeats = positiveInt('repeats', values.repeats)
  const server = process.env.DATABASE_URL ?? 'postgresql://postgres@127.0.0.1:5432/postgres'
  const dbUrl = withDatabase(server, `iisan_bench_checkpoint_${Date.now().toString(36)}_${randomBytes(3).toString('hex')}`)
  console.log(`bench:checkpoint: ${mib} MiB state in ${partMib} MiB parts, ${repeats} runs a transport; ${machineLine()}`)
  await ensureDatabaseExists(dbUrl)
  try {
    await applyMigrations(dbUrl, path.join(REPO, 'prisma/migrations'))
    const prisma = createPrisma(dbUrl)
    const dataset = await importDataset(prisma, { name: 'bench-checkpoint', items: [{ externalId: 'i', title: 'item' }], users: [] })
    const jobId = (await createTrainingJob(prisma, { datasetId: dataset.id, method: 'fft', config: {} })).id
    await prisma.$disconnect()
    const runs: Record<Transport, { save: ChildResult[]; load: ChildResult[] }> = { prisma: { save: [], load: [] }, binary: { save: [], load: [] } }
    // interleaved, so that a change of load on the shared machine falls on both transports
    for (let r = 0; r < repeats; r++) {
      for (const transport of TRANSPORTS) {
        const save = runChild('save', dbUrl, jobId, transport, mib, partMib)
        const load = runChild('load', dbUrl, jobId, transport, mib, partMib)
        runs[transport].save.push(save)
        runs[transport].load.push(load)
        console.log(`  run ${r + 1} ${transport.padEnd(6)}: save ${save.seconds.toFixed(1)} s (+${save.transientMib.toFixed(0)} MiB), load ${load.seconds.toFixed(1)} s (+${load.transientMib.toFixed(0)} MiB)`)
      }
    }
    const rows = TRANSPORTS.map((transport) => {
      const { save, load } = runs[transport]
      return {
        transport,
        saveSeconds: median(save.map((x) => x.seconds)),
        saveMibPerSecond: mib / median(save.map((x) => x.seconds)),
        saveTransientMib: median(save.map((x) => x.transientMib)),
        savePeakRssMib: median(save.map((x) => x.peakRssMib)),
        loadSeconds: median(load.map((x) => x.seconds)),
        loadMibPerSecond: mib / median(load.map((x) => x.seconds)),
        loadTransientMib: median(load.map((x) => x.transientMib)),
        loadPeakRssMib: median(load.map((x) => x.peakRssMib)),
      }
    })
    const [prismaRow, binaryRow] = rows as [(typeof rows)[0], (typeof rows)[0]]
    console.log(`\nmedians of ${repeats} (transient: peak RSS on top of the state the process already held)\n`)
    console.log('| transport | save s | save MiB/s | save transient MiB | load s | load MiB/s | load transient MiB |')
    console.log('| --- | --- | --- | --- | --- | --- | --- |')
    for (const r of rows) {
      console.log(`| ${r.transport} | ${r.saveSeconds.toFixed(1)} | ${r.saveMibPerSecond.toFixed(0)} | ${r.saveTransientMib.toFixed(0)} | ${r.loadSeconds.toFixed(1)} | ${r.loadMibPerSecond.toFixed(0)} | ${r.loadTransientMib.toFixed(0)} |`)
    }
    const ratios = {
      saveTime: binaryRow.saveSeconds / prismaRow.saveSeconds,
      loadTime: binaryRow.loadSeconds / prismaRow.loadSeconds,
      saveTransient: binaryRow.saveTransientMib / prismaRow.saveTransientMib,
      loadTransient: binaryRow.loadTransientMib / prismaRow.loadTransientMib,
    }
    console.log(`\nbinary / prisma: save time ${ratios.saveTime.toFixed(2)}×, load time ${ratios.loadTime.toFixed(2)}×, save transient ${ratios.saveTransient.toFixed(2)}×, load transient ${ratios.loadTransient.toFixed(2)}×`)
    const out = path.resolve(values.out ?? path.join(REPO, 'bench/results/checkpoint.json'))
    const commit = execFileSync('git', ['rev-parse', 'HEAD'], { cwd: REPO, encoding: 'utf8' }).trim()
    fs.writeFileSync(
      out,
      `${JSON.stringify({ date: new Date().toISOString(), command: `npm run bench:checkpoint -- --mib ${mib} --repeats ${repeats} --part-mib ${partMib}${values.out === undefined ? '' : ` --out ${path.relative(REPO, path.resolve(values.out))}`}`, source: 'measured', commit, machine: { ...machine(), loadAverageAtEnd: loadAverage() }, stateMib: mib, partMib, rows, ratios, runs }, null, 2)}\n`,
    )
    console.log(`wrote ${path.relative(process.cwd(), out)}`)
  } finally {
    await dropDatabase(dbUrl).catch((e: Error) => console.error(`could not drop the bench database: ${e.message}`))
  }
}

await main()
