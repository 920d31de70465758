// Runs one training job end to end: dataset from Postgres → protocol → train → model version.
// The worker service wires this to BullMQ; tests and the CLI can call it directly.
import { buildProtocol, type ProtocolData } from '@iisan/model/data'
import { saveCheckpoint } from '@iisan/model/checkpoint'
import { SequentialRecommender, iisanConfig, sasRecIdConfig, type RecommenderConfig } from '@iisan/model/recommender'
import type { CachedStates } from '@iisan/model/cached-states'
import { IisanItemEncoder, embedItemStates } from '@iisan/model/iisan'
import { unseenItemStates } from './cold-start.ts'
import type { LoadedStates } from './cache-states.ts'
import { train, type EpochReport, type StepReport, TrainingCancelled } from '@iisan/model/trainer'
import {
  appendEpochMetric,
  createModelVersion,
  getTrainingJob,
  isTrainingJobCancelRequested,
  loadDatasetSequences,
  updateTrainingJobProgress,
  updateTrainingJobStatus,
  type PrismaClient,
} from '@iisan/storage'
import { defaultTrainingConfig, type TrainingConfig } from './training-config.ts'

export interface JobProgress {
  phase: 'loading' | 'caching' | 'training' | 'evaluating' | 'saving' | 'done'
  /** while caching: items with cached states / items */
  cached?: number
  total?: number
  epoch?: number
  maxEpochs?: number
  step?: number
  stepsPerEpoch?: number
  loss?: number
  valHr10?: number
  valNdcg10?: number
  stepsPerSecond?: number
  /** 0..1 over the maximum number of epochs (early stopping may finish sooner) */
  fraction: number
}

export interface RunJobOptions {
  /** Called on every progress change (the worker forwards it to BullMQ's job progress). */
  onProgress?(progress: JobProgress): void | Promise<void>
  /**
   * The worker is shutting down: stop at the next step and hand the job back (status 'queued')
   * so that another worker, or this one after a restart, trains it again.
   */
  isInterrupted?(): boolean
  log?(message: string, fields?: object): void
  /**
   * IISAN's cached backbone states for the protocol's items (item index i ↔ Item.id
   * data.itemKeys[i]); the worker wires this to the embedding cache, which may build it first.
   */
  loadStates?(
    datasetId: string,
    data: ProtocolData,
    report: (progress: JobProgress) => Promise<void>,
    shouldCancel: () => Promise<boolean>,
    sideLayers?: number[],
  ): Promise<LoadedStates>
  /** Called when the new version became the dataset's active model. */
  onActivated?(datasetId: string, modelVersionId: string): void | Promise<void>
}

export type JobOutcome =
  | { status: 'completed'; modelVersionId: string }
  | { status: 'cancelled' }
  | { status: 'interrupted' }
  | { status: 'failed'; error: string }

const PROGRESS_EVERY_STEPS = 20

/** Keys the protocol uses for items: Item.id as a string, in catalogue (id) order. */
export function protocolForDataset(sequences: Awaited<ReturnType<typeof loadDatasetSequences>>, config: TrainingConfig): ProtocolData {
  return buildProtocol(
    sequences.sequences.map((s) => ({ key: s.externalId, items: s.itemIds.map(String) })),
    sequences.items.map((i) => String(i.id)),
    { maxSeqLen: config.maxSeqLen, minInteractions: 5 },
  )
}

/**
 * The trained protocol items plus every other item of the dataset whose states are cached,
 * embedded by the trained SAN (the encoder's training states are replaced: call this last).
 */
async function withUnseenItems(
  prisma: PrismaClient,
  datasetId: string,
  encoder: IisanItemEncoder,
  backbones: LoadedStates['backbones'],
  itemIndex: number[],
  embeddings: Float32Array,
): Promise<{ itemIndex: number[]; embeddings: Float32Array }> {
  const unseen = await unseenItemStates(prisma, datasetId, new Set(itemIndex), backbones)
  if (unseen.ids.length === 0) return { itemIndex, embeddings }
  const rows = embedItemStates(encoder, unseen.states)
  const all = new Float32Array(embeddings.length + rows.length)
  all.set(embeddings)
  all.set(rows, embeddings.length)
  return { itemIndex: [...itemIndex, ...unseen.ids], embeddings: all }
}

function userEncoderPart(config: TrainingConfig) {
  const { embeddingDim, numBlocks, numHeads, maxSeqLen, dropout, seed } = config
  return { embeddingDim, numBlocks, numHeads, maxSeqLen, dropout, seed }
}

/** The IISAN configuration for these states, validating the side layers against the text backbone. */
export function iisanModelConfig(numItems: number, states: CachedStates, config: TrainingConfig) {
  const L = states.text.numLayers
  const bad = config.sideLayers?.filter((l) => l > L)
  if (bad?.length) throw new Error(`side layers ${bad.join(', ')} exceed the text backbone's ${L} layers`)
  const shape = (m: 'text' | 'image') => ({ numLayers: states[m].numLayers, width: states[m].width })
  return iisanConfig(numItems, shape('text'), shape('image'), {
    ...userEncoderPart(config),
    modality: config.modality,
    reduction: config.reduction,
    activation: config.activation,
    ...(config.sideLayers ? { sideLayers: [...config.sideLayers].sort((a, b) => a - b) } : {}),
  })
}

export async function runTrainingJob(prisma: PrismaClient, jobId: string, options: RunJobOptions = {}): Promise<JobOutcome> {
  const job = await getTrainingJob(prisma, jobId)
  if (!job) throw new Error(`training job ${jobId} not found`)
  if (job.status !== 'queued' && job.status !== 'running') return job.status === 'cancelled' ? { status: 'cancelled' } : { status: 'failed', error: `job is ${job.status}` }
  const config = defaultTrainingConfig(job.config as Partial<TrainingConfig>)
  const report = async (progress: JobProgress) => {
    await updateTrainingJobProgress(prisma, jobId, { ...progress })
    await options.onProgress?.(progress)
  }
  // Compare-and-set: a job cancelled while it waited in the queue stays cancelled.
  if (!(await updateTrainingJobStatus(prisma, jobId, 'running', { from: ['queued', 'running'] }))) return { status: 'cancelled' }
  await report({ phase: 'loading', fraction: 0 })

  let cancelCheckedAt = 0
  let cancelled = false
  const shouldCancel = async () => {
    if (options.isInterrupted?.()) return true
    // The flag lives in Postgres; polling it once a second is plenty.
    if (Date.now() - cancelCheckedAt > 1000) {
      cancelCheckedAt = Date.now()
      cancelled = await isTrainingJobCancelRequested(prisma, jobId)
    }
    return cancelled
  }

  let model: SequentialRecommender | undefined
  try {
    const data = protocolForDataset(await loadDatasetSequences(prisma, job.datasetId), config)
    if (data.stats.usersKept < 2) throw new Error(`dataset has ${data.stats.usersKept} users with ≥ 5 interactions; at least 2 are needed to train`)
    options.log?.('training', { jobId, method: job.method, ...data.stats })
    let modelConfig: RecommenderConfig = sasRecIdConfig(data.numItems, userEncoderPart(config))
    let states: CachedStates | undefined
    let backbones: LoadedStates['backbones'] | undefined
    if (job.method === 'iisan') {
      if (!options.loadStates) throw new Error('IISAN needs cached backbone states, and this worker has no embedding cache configured')
      const loaded = await options.loadStates(job.datasetId, data, report, shouldCancel, config.sideLayers && [...config.sideLayers].sort((a, b) => a - b))
      states = loaded.states
      backbones = loaded.backbones
      modelConfig = iisanModelConfig(data.numItems, states, config)
    }
    model = new SequentialRecommender(modelConfig, states)
    const trainableModel = model
    const result = await train(model, data, config, {
      shouldCancel,
      onStep: async (s: StepReport) => {
        if (s.step % PROGRESS_EVERY_STEPS !== 0 && s.step !== s.stepsPerEpoch) return
        await report({
          phase: 'training',
          epoch: s.epoch,
          maxEpochs: config.maxEpochs,
          step: s.step,
          stepsPerEpoch: s.stepsPerEpoch,
          loss: s.loss,
          fraction: (s.epoch - 1 + s.step / s.stepsPerEpoch) / config.maxEpochs,
        })
      },
      onEpoch: async (e: EpochReport) => {
        await appendEpochMetric(prisma, {
          jobId,
          epoch: e.epoch,
          trainLoss: e.trainLoss,
          valHr10: e.validation.hr10,
          valNdcg10: e.validation.ndcg10,
          seconds: e.seconds,
          extra: { evalSeconds: e.evalSeconds, stepsPerSecond: e.stepsPerSecond, rssMb: process.memoryUsage().rss / 2 ** 20 },
        })
        await report({
          phase: 'training',
          epoch: e.epoch,
          maxEpochs: config.maxEpochs,
          loss: e.trainLoss,
          valHr10: e.validation.hr10,
          valNdcg10: e.validation.ndcg10,
          stepsPerSecond: e.stepsPerSecond,
          fraction: e.epoch / config.maxEpochs,
        })
      },
    })
    await report({ phase: 'saving', fraction: 1 })
    const D = config.embeddingDim
    // IISAN embeds from content, so it can serve more than the protocol's items: catalogue items
    // without (enough) interactions, and items added while it trained.
    const served =
      backbones && trainableModel.itemEncoder instanceof IisanItemEncoder
        ? await withUnseenItems(prisma, job.datasetId, trainableModel.itemEncoder, backbones, data.itemKeys.slice(1).map(Number), result.itemMatrix.subarray(D))
        : { itemIndex: data.itemKeys.slice(1).map(Number), embeddings: result.itemMatrix.subarray(D) }
    const version = await createModelVersion(prisma, {
      datasetId: job.datasetId,
      jobId,
      method: job.method,
      // the backbones' fingerprints say which cached states this model's SAN can read (cold start)
      config: JSON.parse(JSON.stringify({ ...trainableModel.config, ...(backbones ? { backbones } : {}) })),
      weights: saveCheckpoint(trainableModel.params, trainableModel.config),
      // stored row r is model index r + 1 (the padding row is not stored)
      itemEmbeddings: served.embeddings,
      itemIndex: served.itemIndex,
      embeddingDim: D,
      testHr10: result.test.hr10,
      testNdcg10: result.test.ndcg10,
      valHr10: result.validation.hr10,
      valNdcg10: result.validation.ndcg10,
      secondsPerEpoch: result.secondsPerEpoch,
      peakMemoryMb: result.peakRssMb,
      trainableParams: result.trainableParams,
      epochs: result.epochs.length,
      metrics: { bestEpoch: result.bestEpoch, dataset: { ...data.stats }, testUsers: result.test.users, servedItems: served.itemIndex.length },
      // The first model of a dataset goes live by itself; later ones wait for an explicit activation.
      activateIfNoneActive: true,
    })
    if (version.isActive) await options.onActivated?.(job.datasetId, version.id)
    await updateTrainingJobStatus(prisma, jobId, 'completed', { from: ['running'], progress: { phase: 'done', fraction: 1 } })
    await options.onProgress?.({ phase: 'done', fraction: 1 })
    return { status: 'completed', modelVersionId: version.id }
  } catch (e) {
    // Terminal updates only from 'running': a job another worker already finished stays finished.
    if (e instanceof TrainingCancelled && options.isInterrupted?.() && !cancelled) {
      await updateTrainingJobStatus(prisma, jobId, 'queued', { from: ['running'], progress: { phase: 'loading', fraction: 0 } })
      return { status: 'interrupted' }
    }
    if (e instanceof TrainingCancelled) {
      await updateTrainingJobStatus(prisma, jobId, 'cancelled', { from: ['running'] })
      return { status: 'cancelled' }
    }
    const error = e instanceof Error ? e.message : String(e)
    await updateTrainingJobStatus(prisma, jobId, 'failed', { from: ['running'], error })
    return { status: 'failed', error }
  } finally {
    model?.dispose()
  }
}
