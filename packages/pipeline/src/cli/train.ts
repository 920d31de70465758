// `npm run train -- [--data DIR] [--method sasrec-id|iisan] [--states DIR] [--epochs N] [--users N] [--json PATH]`
// Trains on the two TSV files of a dataset folder with the paper's configuration and prints
// validation/test HR@10 and NDCG@10 and seconds per epoch. IISAN reads cached backbone states
// from a states folder (`npm run cache-states` writes one); IISAN switches: --modality,
// --side-layers 0,2,4 --reduction 64 --activation relu|gelu. Also --patience N,
// --select-by hr10|ndcg10, and a learning rate per parameter group: --lr-item, --lr-user,
// --lr-text-encoder, --lr-image-encoder, --lr-text-adapters, --lr-image-adapters. Bad arguments, unreadable data or fewer than 2 users with enough interactions
// print one `error: …` line and exit 2.
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs'
import path from 'node:path'
import cliProgress from 'cli-progress'
import {
  PAPER_IISAN,
  PAPER_PROTOCOL,
  PAPER_TRAINING,
  PAPER_USER_ENCODER,
  SequentialRecommender,
  iisanConfig,
  initBackend,
  protocolFromTsv,
  sasRecIdConfig,
  train,
  type CachedStates,
  type LearningRates,
  type ModalityMode,
  type SelectionMetric,
  type RecommenderConfig,
} from '@iisan/model'
import { loadStatesFolder } from '../states-folder.ts'
import { errorMessage, fail, failOnUncaught, parseOptions, positiveInt, positiveNumber } from './args.ts'

const USAGE = 'usage: npm run train -- [--data DIR] [--method sasrec-id|iisan] [--states DIR] [--epochs N] [--patience N] [--users N] [--select-by hr10|ndcg10] [--lr-item X] [--lr-user X] [--lr-text-encoder X] [--lr-image-encoder X] [--lr-text-adapters X] [--lr-image-adapters X] [--json PATH] [--modality M] [--side-layers 0,2,4] [--reduction N] [--activation relu|gelu]'
failOnUncaught()

/** The command-line flag of each learning rate. */
const RATE_FLAGS: Record<string, keyof LearningRates> = {
  'lr-item': 'lrItem',
  'lr-user': 'lrUser',
  'lr-text-encoder': 'lrTextEncoder',
  'lr-image-encoder': 'lrImageEncoder',
  'lr-text-adapters': 'lrTextAdapters',
  'lr-image-adapters': 'lrImageAdapters',
}

async function main() {
  const { values } = parseOptions(
    {
      data: { type: 'string', default: 'data/scientific' },
      method: { type: 'string', default: 'sasrec-id' },
      epochs: { type: 'string', default: String(PAPER_TRAINING.maxEpochs) },
      patience: { type: 'string', default: String(PAPER_TRAINING.patience) },
      users: { type: 'string' },
      ...Object.fromEntries(Object.entries(RATE_FLAGS).map(([flag, key]) => [flag, { type: 'string' as const, default: String(PAPER_TRAINING[key]) }])),
      'select-by': { type: 'string', default: PAPER_TRAINING.selectBy },
      json: { type: 'string' },
      states: { type: 'string', default: 'artifacts/states/scientific' },
      modality: { type: 'string', default: PAPER_IISAN.modality },
      'side-layers': { type: 'string' },
      reduction: { type: 'string', default: String(PAPER_IISAN.reduction) },
      activation: { type: 'string', default: PAPER_IISAN.activation },
    },
    USAGE,
  )
  if (values.method !== 'sasrec-id' && values.method !== 'iisan') fail(`unknown method ${values.method} (available: sasrec-id, iisan)`)
  if (!['intra', 'inter', 'intra_inter'].includes(values.modality!)) fail('--modality must be intra, inter or intra_inter')
  if (!['relu', 'gelu'].includes(values.activation!)) fail('--activation must be relu or gelu')
  // Every numeric option is checked before anything is loaded.
  const maxEpochs = positiveInt('epochs', values.epochs)
  const patience = positiveInt('patience', values.patience)
  const maxUsers = values.users === undefined ? undefined : positiveInt('users', values.users)
  if (values['select-by'] !== 'hr10' && values['select-by'] !== 'ndcg10') fail('--select-by must be hr10 or ndcg10')
  const selectBy: SelectionMetric = values['select-by']
  const rates = Object.fromEntries(Object.entries(RATE_FLAGS).map(([flag, key]) => [key, positiveNumber(flag, (values as Record<string, string | undefined>)[flag])])) as unknown as LearningRates
  const reduction = positiveInt('reduction', values.reduction)
  let sideLayers: number[] | undefined
  if (values['side-layers'] !== undefined) {
    const parts = values['side-layers'].split(',').map((p) => p.trim())
    if (!parts.every((p) => /^\d+$/.test(p))) fail(`--side-layers must be a comma-separated list of layer numbers, e.g. 0,2,4 (got ${JSON.stringify(values['side-layers'])})`)
    sideLayers = parts.map(Number)
  }
  let itemsTsv: string, usersTsv: string
  try {
    itemsTsv = readFileSync(path.join(values.data!, 'items.tsv'), 'utf8')
    usersTsv = readFileSync(path.join(values.data!, 'users.tsv'), 'utf8')
  } catch (e) {
    fail(`cannot read items.tsv/users.tsv in ${values.data}: ${(e as Error).message}`)
  }
  if (maxUsers !== undefined) usersTsv = usersTsv.split('\n').slice(0, maxUsers).join('\n')
  let protocol
  try {
    protocol = protocolFromTsv(itemsTsv, usersTsv)
  } catch (e) {
    fail((e as Error).message)
  }
  const { data } = protocol
  // Same guard as the worker (training-job.ts): without two kept users there is nothing to train
  // on (0 steps, loss NaN) or to evaluate.
  if (data.stats.usersKept < 2) {
    fail(`${values.data} has ${data.stats.usersKept} user(s) with ≥ ${PAPER_PROTOCOL.minInteractions} interactions (of ${data.stats.usersIn}${maxUsers !== undefined ? ` read with --users ${maxUsers}` : ''}); at least 2 are needed to train`)
  }
  const backend = await initBackend()
  console.log(`backend ${backend}; users ${data.stats.usersKept}, items ${data.stats.itemsKept}, interactions ${data.stats.interactionsKept}`)

  const options = { ...PAPER_TRAINING, ...rates, maxEpochs, patience, selectBy }
  let config: RecommenderConfig = sasRecIdConfig(data.numItems, PAPER_USER_ENCODER)
  let states: CachedStates | undefined
  if (values.method === 'iisan') {
    let loaded: CachedStates
    try {
      loaded = loadStatesFolder(values.states!, data).states
    } catch (e) {
      fail(`${(e as Error).message} (write one with: npm run cache-states -- --out ${values.states})`)
    }
    states = loaded
    if (sideLayers?.some((l) => l > loaded.text.numLayers)) fail(`--side-layers must be integers in 0..${loaded.text.numLayers}`)
    const shape = (m: 'text' | 'image') => ({ numLayers: loaded[m].numLayers, width: loaded[m].width })
    config = iisanConfig(data.numItems, shape('text'), shape('image'), {
      ...PAPER_USER_ENCODER,
      modality: values.modality as ModalityMode,
      reduction,
      activation: values.activation as 'relu' | 'gelu',
      ...(sideLayers ? { sideLayers } : {}),
    })
    const present = (m: 'text' | 'image') => loaded[m].rowOf.filter((r) => r >= 0).length
    console.log(`states: text ${present('text')} items (L = ${loaded.text.numLayers}, d = ${loaded.text.width}), image ${present('image')} items; side layers ${config.sideLayers.join(',')}`)
  }
  const model = new SequentialRecommender(config, states)
  const bar = new cliProgress.SingleBar({ format: 'epoch {epoch} |{bar}| {value}/{total} steps  loss {loss}', hideCursor: true }, cliProgress.Presets.shades_classic)
  let result
  try {
    result = await train(model, data, options, {
      onStep: (s) => {
        if (s.step === 1) bar.start(s.stepsPerEpoch, 0, { epoch: s.epoch, loss: '-' })
        bar.update(s.step, { epoch: s.epoch, loss: s.loss.toFixed(4) })
        if (s.step === s.stepsPerEpoch) bar.stop()
      },
      onEpoch: (e) =>
        console.log(`epoch ${e.epoch}: loss ${e.trainLoss.toFixed(4)}  val HR@10 ${e.validation.hr10.toFixed(4)}  NDCG@10 ${e.validation.ndcg10.toFixed(4)}  train ${e.seconds.toFixed(1)} s  eval ${e.evalSeconds.toFixed(1)} s`),
    })
  } finally {
    bar.stop() // a failed epoch must not leave the terminal's cursor hidden
  }
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

main().catch((e: unknown) => fail(errorMessage(e)))
