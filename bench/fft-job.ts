// `npm run bench:fft-job -- [--users N] [--epochs E]`: one FFT training job at base shapes (BERT-base
// and ViT-B/16, random weights) through the platform's job runner, the code a worker runs for
// `POST /v1/training-jobs`: a throwaway database, a sample of Scientific's users with a synthetic
// image per item, the job's per-epoch checkpoints in PostgreSQL (FFT's ≈ 3.1 GB state), its
// evaluation and its model version. An FFT epoch of the full Scientific data takes about 17 hours
// here, so the sample is small; what it shows is that the whole path holds at this size, and
// what each phase costs. After the job, the model version is read back the way serving reads it.
// Prints a summary and writes bench/results/fft-job.json, also when the job fails (until December 7
// it failed at its last phase: the model version's weights, the fine-tuned backbones, went through
// Prisma as one base64 string longer than V8's string limit; they are a blob now).
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { bertHfConfig, demoVocabText, vitHfConfig, writeRandomBert, writeRandomVit } from '@iisan/backbones/default'
import { dropDatabase, ensureDatabaseExists, withDatabase } from '@iisan/config'
import { ServingModel, initBackend, readCheckpoint } from '@iisan/model'
import { datasetContentLoader, runTrainingJob, sampleDataset, type JobProgress } from '@iisan/pipeline'
import { parseOptions, positiveInt } from '@iisan/pipeline/cli/args'
import { applyMigrations, createPrisma, createTrainingJob, decodeItemEmbeddings, getModelVersion, importDataset } from '@iisan/storage'
import { syntheticImage } from './lib/synthetic-images.ts'
import { loadAverage, machine, machineLine } from './lib/machine.ts'

const REPO = path.resolve(import.meta.dirname, '..')
const { values } = parseOptions({ users: { type: 'string', default: '6' }, epochs: { type: 'string', default: '2' } }, 'usage: npm run bench:fft-job -- [--users N] [--epochs E]')
const users = positiveInt('users', values.users)
const epochs = positiveInt('epochs', values.epochs)
const MB = 2 ** 20

const started = performance.now()
const elapsed = () => (performance.now() - started) / 1000
const say = (message: string) => console.log(`[${elapsed().toFixed(0).padStart(5)} s] ${message}`)

await initBackend()
const server = process.env.DATABASE_URL ?? 'postgresql://postgres@127.0.0.1:5432/postgres'
const dbUrl = withDatabase(server, `iisan_bench_fft_job_${Date.now().toString(36)}_${randomBytes(3).toString('hex')}`)
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'iisan-fft-job-'))
say(`bench:fft-job: ${users} users, ${epochs} epochs; ${machineLine()}`)
await ensureDatabaseExists(dbUrl)
const prisma = createPrisma(dbUrl)
try {
  await applyMigrations(dbUrl, path.join(REPO, 'prisma/migrations'))
  const sample = sampleDataset(users)
  const items = await Promise.all(
    sample.itemsTsv
      .split('\n')
      .filter(Boolean)
      .map(async (line, i) => {
        const [externalId, title] = line.split('\t')
        return { externalId: externalId!, title: title!, imageBlob: new Uint8Array(await syntheticImage(i + 1)), imageMime: 'image/png' }
      }),
  )
  const dataset = await importDataset(prisma, {
    name: 'fft-base-job',
    items,
    users: sample.userLines.map((line) => ({ externalId: line.split('\t')[0]!, itemExternalIds: line.split('\t')[1]!.split(' ') })),
  })
  const dirs = { text: path.join(work, 'bert-base'), image: path.join(work, 'vit-b-16') }
  writeRandomBert(dirs.text, bertHfConfig({}), demoVocabText(), 'bench-fft-job')
  writeRandomVit(dirs.image, vitHfConfig({}), 'bench-fft-job')
  say(`dataset: ${items.length} items with synthetic images, ${users} users; BERT-base and ViT-B/16 shapes written with random weights`)
  // the methods that run the backbones train 2 users a step at base size (4 ran out of the wasm heap: README, bench:methods)
  const job = await createTrainingJob(prisma, { datasetId: dataset.id, method: 'fft', config: { maxEpochs: epochs, batchSize: 2 } })

  // the checkpoint lives while the job runs (it is deleted when the job ends): watched from here
  const checkpoints: { epoch: number; bytes: number; seenAtSeconds: number }[] = []
  // (a base step holds the event loop for minutes, so a poll may time out connecting: the next one tries again)
  const watch = setInterval(() => {
    prisma.trainingCheckpoint
      .findUnique({ where: { jobId: job.id }, select: { epoch: true, stateBlob: { select: { byteLength: true } } } })
      .then((c) => {
        if (c && checkpoints.at(-1)?.epoch !== c.epoch) {
          const bytes = Number(c.stateBlob.byteLength)
          checkpoints.push({ epoch: c.epoch, bytes, seenAtSeconds: elapsed() })
          say(`checkpoint of epoch ${c.epoch} stored: ${(bytes / MB).toFixed(0)} MiB`)
        }
      })
      .catch(() => undefined)
  }, 500)
  const phases: { phase: string; atSeconds: number; detail: string }[] = []
  let lastLine = ''
  const outcome = await runTrainingJob(prisma, job.id, {
    loadContent: datasetContentLoader(prisma, async () => dirs),
    log: (message, fields) => say(`${message}${fields ? ` ${JSON.stringify(fields)}` : ''}`),
    onProgress: (p: JobProgress) => {
      const detail = `${p.phase}${'epoch' in p && p.epoch !== undefined ? ` epoch ${p.epoch}` : ''}${'step' in p && p.step !== undefined ? ` step ${p.step}/${p.stepsPerEpoch}` : ''}${'loss' in p && p.loss !== undefined ? ` loss ${p.loss.toFixed(3)}` : ''}`
      if (detail === lastLine) return
      lastLine = detail
      phases.push({ phase: p.phase, atSeconds: elapsed(), detail })
      say(detail)
    },
  })
  clearInterval(watch)
  const peakRssMb = (process.resourceUsage().maxRSS * 1024) / MB
  say(`outcome: ${JSON.stringify(outcome)}; peak RSS ${peakRssMb.toFixed(0)} MB`)
  const out = path.join(REPO, 'bench/results/fft-job.json')
  const header = {
    date: new Date().toISOString(),
    command: `npm run bench:fft-job -- --users ${users} --epochs ${epochs}`,
    source: 'measured',
    commit: execFileSync('git', ['rev-parse', 'HEAD'], { cwd: REPO, encoding: 'utf8' }).trim(),
    machine: { ...machine(), loadAverageAtEnd: loadAverage() },
    setup: `FFT through runTrainingJob (the worker's code), BERT-base + ViT-B/16 shapes with random weights, ${users} Scientific users, ${items.length} items with synthetic PNG images, 2 users a step`,
    outcome,
    totalSeconds: elapsed(),
    peakRssMb,
    checkpoints,
    phases,
  }
  if (outcome.status !== 'completed') {
    // a failed job is a result too: where it failed, and what it cost to get there
    fs.writeFileSync(out, `${JSON.stringify(header, null, 2)}\n`)
    say(`wrote ${path.relative(process.cwd(), out)}`)
    throw new Error(`the job ended ${outcome.status}: ${'error' in outcome ? outcome.error : ''}`)
  }
  const version = await prisma.modelVersion.findUniqueOrThrow({
    where: { id: outcome.modelVersionId },
    select: { id: true, method: true, testHr10: true, testNdcg10: true, valHr10: true, secondsPerEpoch: true, peakMemoryMb: true, trainableParams: true, epochs: true },
  })
  // read back as serving reads it: the weights from their blob (length and sha256 checked), then parsed
  const readStarted = performance.now()
  const stored = (await getModelVersion(prisma, version.id))!
  const readSeconds = (performance.now() - readStarted) / 1000
  const parsed = readCheckpoint(stored.weights)
  // and served: the user encoder from the weights, the items from the stored matrix (row 0 = padding)
  const D = stored.embeddingDim
  const matrix = new Float32Array((stored.numItems + 1) * D)
  matrix.set(decodeItemEmbeddings(stored), D)
  const serving = ServingModel.load(stored.weights, matrix, { approximateFrom: Infinity })
  const recommended = serving.recommend([1, 2, 3], 5).map((s) => s.index)
  serving.dispose()
  const readBack = { weightsBytes: stored.weights.byteLength, readSeconds, tensors: parsed.values.size, servedTop5ForHistory123: recommended }
  const epochRows = await prisma.epochMetric.findMany({ where: { jobId: job.id }, orderBy: { epoch: 'asc' } })
  const result = { ...header, epochs: epochRows, modelVersion: { ...version, ...readBack } }
  fs.writeFileSync(out, `${JSON.stringify(result, (_k, v) => (typeof v === 'bigint' ? Number(v) : v), 2)}\n`)
  say(`model version ${version.id}: ${JSON.stringify({ ...version, ...readBack })}`)
  say(`wrote ${path.relative(process.cwd(), out)}`)
} finally {
  await prisma.$disconnect()
  await dropDatabase(dbUrl).catch((e: Error) => console.error(`could not drop the bench database: ${e.message}`))
  fs.rmSync(work, { recursive: true, force: true })
}
