// `npm run train -- [--data DIR] [--method NAME] [--users N] [--json PATH] [settings…]`
// Trains one registered method on the two TSV files of a dataset folder with its paper
// configuration and prints validation/test HR@10 and NDCG@10, seconds per epoch, peak memory and
// trainable parameters. Every training setting the API takes is a flag here (`--lr-text-encoder`,
// `--side-layers 0,2,4`, `--adapter-bottleneck 64`, …; `--epochs` for `--max-epochs`), parsed and
// validated by the same schema. What the method reads decides the inputs: cached states from a
// states folder (`--states`, written by `npm run cache-states`), or the titles (and the images of a
// third items.tsv column) run through the backbones (`--text-model` / `--image-model` folders, the
// demo pair by default). Bad arguments, unreadable data or fewer than 2 users with enough
// interactions print one `error: …` line and exit 2.
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs'
import path from 'node:path'
import cliProgress from 'cli-progress'
import { DEFAULT_BACKBONE_DIR, ensureDefaultBackbones } from '@iisan/backbones'
import {
  METHODS,
  PAPER_PROTOCOL,
  SequentialRecommender,
  defaultTrainingConfig,
  findMethod,
  initBackend,
  protocolFromTsv,
  train,
  trainingConfigProblems,
  type ItemSource,
  type MethodInputs,
  type ProtocolData,
} from '@iisan/model'
import { loadStatesFolder } from '../training/states-folder.ts'
import { loadItemContent } from '../training/item-content.ts'
import { errorMessage, fail, failOnUncaught, parseOptions, positiveInt } from './args.ts'
import { settingsFlagOptions, settingsFromFlags, settingsUsage } from './settings-flags.ts'

const USAGE = `usage: npm run train -- [--data DIR] [--method ${METHODS.map((m) => m.name).join('|')}] [--users N] [--json PATH] [--states DIR] [--text-model DIR] [--image-model DIR] ${settingsUsage()}`
failOnUncaught()

interface Dataset {
  dir: string
  data: ProtocolData
  titles: string[]
  imageRefs: (string | null)[]
}

type FlagValues = Record<string, string | boolean | undefined>

/** What each kind of method reads, loaded from the command line's folders. */
const INPUTS: Record<ItemSource, (values: FlagValues, dataset: Dataset) => Promise<MethodInputs>> = {
  'item-ids': async () => ({}),
  'cached-states': async (values, { data }) => {
    const dir = values.states as string
    try {
      const { states } = loadStatesFolder(dir, data)
      const present = (m: 'text' | 'image') => states[m].rowOf.filter((r) => r >= 0).length
      console.log(`states: text ${present('text')} items (L = ${states.text.numLayers}, d = ${states.text.width}), image ${present('image')} items`)
      return { states }
    } catch (e) {
      fail(`${errorMessage(e)} (write one with: npm run cache-states -- --out ${dir})`)
    }
  },
  'item-content': async (values, { dir, titles, imageRefs }) => {
    const demo = values['text-model'] && values['image-model'] ? undefined : await ensureDefaultBackbones(DEFAULT_BACKBONE_DIR)
    const text = (values['text-model'] as string | undefined) ?? demo!.text
    const image = (values['image-model'] as string | undefined) ?? demo!.image
    const loaded = await loadItemContent(
      { titles, images: imageRefs.map((ref) => (ref ? async () => (/^https?:/.test(ref) ? null : path.resolve(dir, ref)) : null)) },
      { text, image },
    )
    console.log(`backbones: text ${text}${image ? `, image ${image}` : ''} (run inside every training step)`)
    return { content: loaded.content, backbones: loaded.backbones }
  },
}

async function main() {
  const { values } = parseOptions(
    {
      data: { type: 'string', default: 'data/scientific' },
      method: { type: 'string', default: 'sasrec-id' },
      users: { type: 'string' },
      json: { type: 'string' },
      states: { type: 'string', default: 'artifacts/states/scientific' },
      'text-model': { type: 'string' },
      'image-model': { type: 'string' },
      ...settingsFlagOptions(),
    },
    USAGE,
  )
  const method = findMethod(values.method!)
  if (!method) fail(`unknown method ${values.method} (available: ${METHODS.map((m) => m.name).join(', ')})`)
  // Every setting is checked before anything is loaded.
  const settings = defaultTrainingConfig(method, settingsFromFlags(values))
  const problems = trainingConfigProblems(settings)
  if (problems.length) fail(problems.map((p) => p.message).join('; '))
  const maxUsers = values.users === undefined ? undefined : positiveInt('users', values.users)
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
    protocol = protocolFromTsv(itemsTsv, usersTsv, { ...PAPER_PROTOCOL, maxSeqLen: settings.maxSeqLen })
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
  console.log(`backend ${backend}; method ${method.name}; users ${data.stats.usersKept}, items ${data.stats.itemsKept}, interactions ${data.stats.interactionsKept}`)

  const inputs = await INPUTS[method.reads](values, { dir: values.data!, data, titles: protocol.titles, imageRefs: protocol.imageRefs })
  let config
  try {
    config = method.modelConfig(data.numItems, settings, inputs)
  } catch (e) {
    fail(errorMessage(e))
  }
  const options = settings
  const model = new SequentialRecommender(config, inputs)
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
    method: method.name,
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
