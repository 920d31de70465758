// `npm run train -- [--data DIR] [--method sasrec-id] [--epochs N] [--users N] [--json PATH]`
// Trains on the two TSV files of a dataset folder with the paper's configuration and prints
// validation/test HR@10 and NDCG@10 and seconds per epoch.
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs'
import path from 'node:path'
import { parseArgs } from 'node:util'
import cliProgress from 'cli-progress'
import { initBackend } from '../backend.ts'
import { protocolFromTsv } from '../data.ts'
import { SequentialRecommender, sasRecIdConfig } from '../recommender.ts'
import { PAPER_TRAINING, train } from '../trainer.ts'
import { PAPER_USER_ENCODER } from '../user-encoder.ts'

function fail(message: string): never {
  console.error(`error: ${message}`)
  process.exit(2)
}

async function main() {
  const { values } = parseArgs({
    options: {
      data: { type: 'string', default: '../shared/datasets/scientific' },
      method: { type: 'string', default: 'sasrec-id' },
      epochs: { type: 'string', default: String(PAPER_TRAINING.maxEpochs) },
      patience: { type: 'string', default: String(PAPER_TRAINING.patience) },
      users: { type: 'string' },
      'lr-item': { type: 'string', default: String(PAPER_TRAINING.lrItem) },
      'lr-user': { type: 'string', default: String(PAPER_TRAINING.lrUser) },
      json: { type: 'string' },
    },
  })
  if (values.method !== 'sasrec-id') fail(`unknown method ${values.method} (available: sasrec-id)`)
  const num = (name: string, v: string | undefined) => {
    const n = Number(v)
    if (!Number.isFinite(n) || n <= 0) fail(`--${name} must be a positive number`)
    return n
  }
  let itemsTsv: string, usersTsv: string
  try {
    itemsTsv = readFileSync(path.join(values.data!, 'items.tsv'), 'utf8')
    usersTsv = readFileSync(path.join(values.data!, 'users.tsv'), 'utf8')
  } catch (e) {
    fail(`cannot read items.tsv/users.tsv in ${values.data}: ${(e as Error).message}`)
  }
  if (values.users) usersTsv = usersTsv.split('\n').slice(0, num('users', values.users)).join('\n')
  let protocol
  try {
    protocol = protocolFromTsv(itemsTsv, usersTsv)
  } catch (e) {
    fail((e as Error).message)
  }
  const { data } = protocol
  const backend = await initBackend()
  console.log(`backend ${backend}; users ${data.stats.usersKept}, items ${data.stats.itemsKept}, interactions ${data.stats.interactionsKept}`)

  const options = { ...PAPER_TRAINING, maxEpochs: num('epochs', values.epochs), patience: num('patience', values.patience), lrItem: num('lr-item', values['lr-item']), lrUser: num('lr-user', values['lr-user']) }
  const model = new SequentialRecommender(sasRecIdConfig(data.numItems, PAPER_USER_ENCODER))
  const bar = new cliProgress.SingleBar({ format: 'epoch {epoch} |{bar}| {value}/{total} steps  loss {loss}', hideCursor: true }, cliProgress.Presets.shades_classic)
  const result = await train(model, data, options, {
    onStep: (s) => {
      if (s.step === 1) bar.start(s.stepsPerEpoch, 0, { epoch: s.epoch, loss: '-' })
      bar.update(s.step, { epoch: s.epoch, loss: s.loss.toFixed(4) })
      if (s.step === s.stepsPerEpoch) bar.stop()
    },
    onEpoch: (e) =>
      console.log(`epoch ${e.epoch}: loss ${e.trainLoss.toFixed(4)}  val HR@10 ${e.validation.hr10.toFixed(4)}  NDCG@10 ${e.validation.ndcg10.toFixed(4)}  train ${e.seconds.toFixed(1)} s  eval ${e.evalSeconds.toFixed(1)} s`),
  })
  const summary = {
    method: values.method,
    backend,
    dataset: data.stats,
    bestEpoch: result.bestEpoch,
    validation: result.validation,
    test: result.test,
    secondsPerEpoch: result.secondsPerEpoch,
    peakRssMb: result.peakRssMb,
    trainableParams: result.trainableParams,
    epochs: result.epochs,
  }
  console.table({
    validation: { 'HR@10': result.validation.hr10, 'NDCG@10': result.validation.ndcg10 },
    test: { 'HR@10': result.test.hr10, 'NDCG@10': result.test.ndcg10 },
  })
  console.log(`best epoch ${result.bestEpoch}; ${result.secondsPerEpoch.toFixed(2)} s/epoch; peak RSS ${result.peakRssMb.toFixed(0)} MB; ${result.trainableParams} trainable parameters`)
  if (values.json) {
    mkdirSync(path.dirname(values.json), { recursive: true })
    writeFileSync(values.json, JSON.stringify(summary, null, 2))
  }
  model.dispose()
}

main().catch((e) => fail(e instanceof Error ? e.message : String(e)))
