// Runs one training job end to end: dataset from Postgres → protocol → train → model version.
// The worker service wires this to BullMQ; tests and the CLI can call it directly.
import { buildProtocol, type ProtocolData } from '@iisan/model/data'
import { saveCheckpoint } from '@iisan/model/checkpoint'
import { SequentialRecommender } from '@iisan/model/recommender'
import { closeStates, type CachedStates } from '@iisan/model/cached-states'
import type { ItemEncoder } from '@iisan/model/item-encoder'
import { getMethod, UnknownMethod } from '@iisan/model/methods/registry'
import type { AnyTrainingMethod, ItemSource, MethodInputs } from '@iisan/model/methods/method'
import { unseenItemStates } from '@iisan/embedding-cache/stored-states'
import { protocolFingerprint, train, type EpochReport, type StepReport, TrainingCancelled } from '@iisan/model/trainer'
import { parseTrainingState, serializeTrainingState, type TrainingState } from '@iisan/model/training-state'
import { randomUUID } from 'node:crypto'
import os from 'node:os'
import { JobLease } from './job-lease.ts'
import type { JobProgress } from './progress.ts'
import type { ContentLoader, LoadedStates, StatesLoader } from './inputs.ts'
import {
  MAX_JOB_STARTS,
  appendEpochMetric,
  claimTrainingJob,
  createModelVersion,
  deleteTrainingCheckpoint,
  isStorageError,
  isTrainingJobCancelRequested,
  loadDatasetSequences,
  loadTrainingCheckpoint,
  saveTrainingCheckpoint,
  updateTrainingJobProgress,
  updateTrainingJobStatus,
  type PrismaClient,
  type TrainingJob,
  type TrainingJobStatus,
} from '@iisan/storage'
import { defaultTrainingConfig, type TrainingConfig } from './training-config.ts'
import { getBackboneByFingerprint } from '@iisan/storage'
import { demoBackboneWarning, isDemoModelConfig } from '@iisan/backbones/demo'

export interface RunJobOptions {
  /** Who runs the job (host:pid:…); the job's row names its holder, and only the holder writes it. */
  workerId?: string
  /** Called on every progress change (the worker forwards it to BullMQ's job progress). */
  onProgress?(progress: JobProgress): void | Promise<void>
  /**
   * The worker is shutting down: stop at the next step and hand the job back (status 'queued')
   * so that another worker, or this one after a restart, trains it again.
   */
  isInterrupted?(): boolean
  log?(message: string, fields?: object): void
  /** IISAN's cached backbone states (see StatesLoader); the worker wires this to the embedding cache. */
  loadStates?: StatesLoader
  /** The items' content and the backbones (see ContentLoader), for the methods that run the backbones. */
  loadContent?: ContentLoader
  /** Called when the new version became the dataset's active model. */
  onActivated?(datasetId: string, modelVersionId: string): void | Promise<void>
  /** The queue's lock on the job, renewed with the job's heartbeat. */
  renewLock?(): Promise<void>
  /**
   * An error of the infrastructure (database, Redis, embedding cache unreachable) rather than of
   * the job: the job goes back to the queue for a later attempt instead of failing.
   */
  isTransient?(error: unknown): boolean
  /** When a job handed back after a transient error runs again. */
  retryDelayMs?(): number
  /** Bytes per stored part of the job's checkpoints and model weights (default: @iisan/storage's BLOB_PART_BYTES). */
  blobPartBytes?: number
}

export type JobOutcome =
  | { status: 'completed'; modelVersionId: string }
  | { status: 'cancelled' }
  /** the worker is shutting down: the job is queued again */
  | { status: 'interrupted' }
  | { status: 'failed'; error: string }
  /** an infrastructure error: the job is queued again for later */
  | { status: 'retry'; error: string }
  /** another live worker holds the job */
  | { status: 'held' }
  /** the job was taken over by another worker (or cancelled) while this one ran it */
  | { status: 'lost' }

const PROGRESS_EVERY_STEPS = 20

/** What a method reads, loaded for a job; the method's `reads` picks the loader. */
type InputLoader = (job: { datasetId: string; config: TrainingConfig }, data: ProtocolData, context: LoaderContext) => Promise<{ inputs: MethodInputs; backbones?: LoadedStates['backbones'] }>
interface LoaderContext {
  options: RunJobOptions
  report: (progress: JobProgress) => Promise<void>
  shouldCancel: () => Promise<boolean>
}

const INPUT_LOADERS: Record<ItemSource, InputLoader> = {
  'item-ids': async () => ({ inputs: {} }),
  'cached-states': async (job, data, { options, report, shouldCancel }) => {
    if (!options.loadStates) throw new Error('this method needs cached backbone states, and this worker has no embedding cache configured')
    const sideLayers = job.config.sideLayers as number[] | undefined
    const loaded = await options.loadStates(job.datasetId, data, report, shouldCancel, sideLayers && [...sideLayers].sort((a, b) => a - b))
    return { inputs: { states: loaded.states }, backbones: loaded.backbones }
  },
  'item-content': async (job, data, { options, report }) => {
    if (!options.loadContent) throw new Error('this method runs the backbones, and this worker has none configured')
    const loaded = await options.loadContent(job.datasetId, data, report)
    return { inputs: { content: loaded.content, backbones: loaded.backbones }, backbones: loaded.fingerprints }
  },
}

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
  encoder: ItemEncoder & Required<Pick<ItemEncoder, 'embedFromStates'>>,
  backbones: LoadedStates['backbones'],
  itemIndex: number[],
  embeddings: Float32Array,
): Promise<{ itemIndex: number[]; embeddings: Float32Array }> {
  const unseen = await unseenItemStates(prisma, datasetId, new Set(itemIndex), backbones)
  if (unseen.ids.length === 0) return { itemIndex, embeddings }
  const rows = encoder.embedFromStates(unseen.states)
  const all = new Float32Array(embeddings.length + rows.length)
  all.set(embeddings)
  all.set(rows, embeddings.length)
  return { itemIndex: [...itemIndex, ...unseen.ids], embeddings: all }
}

export async function runTrainingJob(prisma: PrismaClient, jobId: string, options: RunJobOptions = {}): Promise<JobOutcome> {
  const workerId = options.workerId ?? defaultWorkerId()
  const log = options.log ?? (() => {})
  const claim = await claimTrainingJob(prisma, jobId, workerId)
  if (!claim) return { status: 'failed', error: `training job ${jobId} not found` }
  if ('finished' in claim) return finishedOutcome(claim.finished)
  if ('heldElsewhere' in claim) return { status: 'held' }
  const job = claim.claimed
  if (job.attempts > MAX_JOB_STARTS) {
    const error = `the job was started ${job.attempts - 1} times without finishing (did its workers crash?)`
    await updateTrainingJobStatus(prisma, jobId, 'failed', { from: ['running'], heldBy: workerId, error })
    await deleteTrainingCheckpoint(prisma, jobId)
    return { status: 'failed', error }
  }
  let method: AnyTrainingMethod
  try {
    method = getMethod(job.method)
  } catch (e) {
    if (!(e instanceof UnknownMethod)) throw e
    await updateTrainingJobStatus(prisma, jobId, 'failed', { from: ['running'], heldBy: workerId, error: e.message })
    return { status: 'failed', error: e.message }
  }
  const config = defaultTrainingConfig(method, job.config as Partial<TrainingConfig>)
  const lease = new JobLease(prisma, jobId, workerId, { renewLock: options.renewLock, onRenewalError: (e) => log('heartbeat failed', { error: errorMessage(e) }) })
  lease.start()
  let warnings: string[] = []
  let demoBackbones: string[] = []
  const withWarnings = (progress: JobProgress): JobProgress => (warnings.length ? { ...progress, warnings, demoBackbones } : progress)
  // Progress is for people watching: a failed report (database or Redis away) never fails the
  // training; the next report carries the then-current state.
  const report = async (progress: JobProgress) => {
    try {
      await updateTrainingJobProgress(prisma, jobId, { ...withWarnings(progress) })
      await options.onProgress?.(withWarnings(progress))
    } catch (e) {
      log('progress report failed', { error: errorMessage(e) })
    }
  }
  // What must not be lost (epoch metrics, checkpoints) is retried through a short outage.
  const durably = <T>(what: string, write: () => Promise<T>) => retryTransient(what, write, options.isTransient, log)
  await report({ phase: 'loading', fraction: 0 })

  let cancelCheckedAt = 0
  let cancelled = false
  const shouldCancel = async () => {
    if (options.isInterrupted?.() || lease.lost) return true
    // The flag lives in Postgres; polling it once a second is plenty.
    if (Date.now() - cancelCheckedAt > 1000) {
      cancelCheckedAt = Date.now()
      try {
        cancelled = await isTrainingJobCancelRequested(prisma, jobId)
      } catch (e) {
        log('cancel check failed', { error: errorMessage(e) })
      }
    }
    return cancelled
  }

  let model: SequentialRecommender | undefined
  let states: CachedStates | undefined
  try {
    const data = protocolForDataset(await loadDatasetSequences(prisma, job.datasetId), config)
    if (data.stats.usersKept < 2) throw new Error(`dataset has ${data.stats.usersKept} users with ≥ 5 interactions; at least 2 are needed to train`)
    options.log?.('training', { jobId, method: job.method, ...data.stats })
    const { inputs, backbones } = await INPUT_LOADERS[method.reads]({ datasetId: job.datasetId, config }, data, { options, report, shouldCancel })
    states = inputs.states
    if (backbones) {
      demoBackbones = await demoBackbonesOf(prisma, backbones, log)
      if (demoBackbones.length) {
        warnings = [demoBackboneWarning(demoBackbones)]
        log('demo backbones in use', { demoBackbones })
      }
    }
    const modelConfig = method.modelConfig(data.numItems, config, inputs)
    model = new SequentialRecommender(modelConfig, inputs)
    const trainableModel = model
    const resumeFrom = await resumableState(prisma, jobId, data, config, log)
    if (resumeFrom) await report({ phase: 'training', epoch: resumeFrom.epoch, maxEpochs: config.maxEpochs, fraction: resumeFrom.epoch / config.maxEpochs, resumedFromEpoch: resumeFrom.epoch })
    const result = await train(model, data, config, {
      shouldCancel,
      resumeFrom,
      onCheckpoint: async (state: TrainingState) => {
        const bytes = serializeTrainingState(state)
        const checkpoint = { jobId, epoch: state.epoch, state: bytes, meta: { bestEpoch: state.best.epoch, bytes: bytes.byteLength } }
        await durably('checkpoint', () => saveTrainingCheckpoint(prisma, checkpoint, { partBytes: options.blobPartBytes }))
        await lease.renewIfDue()
      },
      onStep: async (s: StepReport) => {
        await lease.renewIfDue()
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
        await durably('epoch metrics', () => appendEpochMetric(prisma, {
          jobId,
          epoch: e.epoch,
          trainLoss: e.trainLoss,
          valHr10: e.validation.hr10,
          valNdcg10: e.validation.ndcg10,
          seconds: e.seconds,
          extra: { evalSeconds: e.evalSeconds, stepsPerSecond: e.stepsPerSecond, rssMb: process.memoryUsage().rss / 2 ** 20 },
        }))
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
    const encoder = trainableModel.itemEncoder
    const served =
      backbones && method.capabilities.coldStart && encoder.embedFromStates
        ? await withUnseenItems(prisma, job.datasetId, encoder as ItemEncoder & Required<Pick<ItemEncoder, 'embedFromStates'>>, backbones, data.itemKeys.slice(1).map(Number), result.itemMatrix.subarray(D))
        : { itemIndex: data.itemKeys.slice(1).map(Number), embeddings: result.itemMatrix.subarray(D) }
    if (lease.lost) return { status: 'lost' }
    const version = await durably('model version', () => createModelVersion(prisma, {
      datasetId: job.datasetId,
      jobId,
      method: job.method,
      // the backbones' fingerprints say which cached states this model's SAN can read (cold start)
      config: JSON.parse(JSON.stringify({ ...trainableModel.config, ...(backbones ? { backbones } : {}), ...(demoBackbones.length ? { demoBackbones } : {}) })),
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
    }, { partBytes: options.blobPartBytes }))
    if (version.isActive) await options.onActivated?.(job.datasetId, version.id)
    await durably('job status', () => updateTrainingJobStatus(prisma, jobId, 'completed', { from: ['running'], progress: { ...withWarnings({ phase: 'done', fraction: 1 }) } }))
    await deleteTrainingCheckpoint(prisma, jobId).catch((e) => log('checkpoint cleanup failed', { error: errorMessage(e) }))
    await options.onProgress?.(withWarnings({ phase: 'done', fraction: 1 }))
    return { status: 'completed', modelVersionId: version.id }
  } catch (e) {
    return await settleAfterError(prisma, jobId, workerId, e, { ...options, lease, cancelled, log })
  } finally {
    lease.stop()
    model?.dispose()
    // after the model: its SAN threads read the rows files until they stop
    if (states) closeStates(states)
  }
}

/**
 * What an exception means for the job. Every write is conditional on this worker still holding it
 * (a job another worker took over, or one already finished, is left alone), and the checkpoint is
 * kept whenever the job will run again.
 */
async function settleAfterError(
  prisma: PrismaClient,
  jobId: string,
  workerId: string,
  e: unknown,
  context: RunJobOptions & { lease: JobLease; cancelled: boolean; log: NonNullable<RunJobOptions['log']> },
): Promise<JobOutcome> {
  const held = { from: ['running'] as TrainingJobStatus[], heldBy: workerId }
  if (context.lease.lost) return { status: 'lost' }
  if (e instanceof TrainingCancelled && context.isInterrupted?.() && !context.cancelled) {
    await updateTrainingJobStatus(prisma, jobId, 'queued', { ...held, retryAt: null }).catch((err) => context.log('hand-back failed', { error: errorMessage(err) }))
    return { status: 'interrupted' }
  }
  const error = errorMessage(e)
  if (context.isTransient?.(e)) {
    const retryAt = new Date(Date.now() + (context.retryDelayMs?.() ?? 0))
    // the database may be the thing that is down: then the reconciler repairs the row later
    await updateTrainingJobStatus(prisma, jobId, 'queued', { ...held, retryAt, error: `will retry after ${retryAt.toISOString()}: ${error}` }).catch((err) =>
      context.log('hand-back failed', { error: errorMessage(err) }),
    )
    return { status: 'retry', error }
  }
  if (e instanceof TrainingCancelled) {
    await updateTrainingJobStatus(prisma, jobId, 'cancelled', held)
  } else {
    await updateTrainingJobStatus(prisma, jobId, 'failed', { ...held, error })
  }
  await deleteTrainingCheckpoint(prisma, jobId)
  return e instanceof TrainingCancelled ? { status: 'cancelled' } : { status: 'failed', error }
}

function finishedOutcome(job: TrainingJob): JobOutcome {
  if (job.status === 'completed' && job.modelVersionId) return { status: 'completed', modelVersionId: job.modelVersionId }
  if (job.status === 'cancelled') return { status: 'cancelled' }
  return { status: 'failed', error: job.error ?? `job is ${job.status}` }
}

/**
 * The job's last checkpoint, when there is a readable one taken on this very data; otherwise
 * training starts over. An unreadable checkpoint (a part missing, its bytes altered, a state that
 * does not parse) is logged and dropped rather than failing the job; the database being away is
 * not that, and still hands the job back for a retry.
 */
async function resumableState(prisma: PrismaClient, jobId: string, data: ProtocolData, config: TrainingConfig, log: NonNullable<RunJobOptions['log']>): Promise<TrainingState | undefined> {
  const unreadable = async (e: unknown) => {
    log('checkpoint ignored: it is unreadable, training starts over', { error: errorMessage(e) })
    await deleteTrainingCheckpoint(prisma, jobId)
    return undefined
  }
  let saved: Awaited<ReturnType<typeof loadTrainingCheckpoint>>
  try {
    saved = await loadTrainingCheckpoint(prisma, jobId)
  } catch (e) {
    if (!isStorageError(e, 'CORRUPT')) throw e
    return unreadable(e)
  }
  if (!saved) return undefined
  let state: TrainingState
  try {
    state = parseTrainingState(saved.state)
  } catch (e) {
    return unreadable(e)
  }
  if (state.dataFingerprint !== protocolFingerprint(data, config)) {
    log('checkpoint ignored: the dataset changed since it was taken', { epoch: state.epoch })
    await deleteTrainingCheckpoint(prisma, jobId)
    return undefined
  }
  log('resuming from checkpoint', { epoch: state.epoch })
  return state
}

const TRANSIENT_WRITE_BUDGET_MS = 60_000

/** Retry a write through a short outage (1 s doubling to 15 s, for up to a minute). */
async function retryTransient<T>(what: string, write: () => Promise<T>, isTransient: RunJobOptions['isTransient'], log: NonNullable<RunJobOptions['log']>): Promise<T> {
  const deadline = Date.now() + TRANSIENT_WRITE_BUDGET_MS
  for (let delay = 1000; ; delay = Math.min(delay * 2, 15_000)) {
    try {
      return await write()
    } catch (e) {
      if (!isTransient?.(e) || Date.now() + delay > deadline) throw e
      log(`${what}: write failed, retrying`, { error: errorMessage(e), inMs: delay })
      await new Promise((resolve) => setTimeout(resolve, delay))
    }
  }
}

/**
 * Which modalities' backbones are the demo pair, by the marker the embedding cache registered
 * with each (Backbone.config.model, see @iisan/backbones/demo). Only a warning: a failed lookup
 * leaves it out rather than failing the job.
 */
async function demoBackbonesOf(prisma: PrismaClient, backbones: LoadedStates['backbones'], log: NonNullable<RunJobOptions['log']>): Promise<string[]> {
  const demo: string[] = []
  for (const [modality, fingerprint] of Object.entries(backbones)) {
    if (!fingerprint) continue
    const row = await getBackboneByFingerprint(prisma, fingerprint).catch((e: unknown) => {
      log('backbone lookup failed', { error: errorMessage(e) })
      return null
    })
    if (isDemoModelConfig((row?.config as { model?: unknown } | null | undefined)?.model)) demo.push(modality)
  }
  return demo
}

function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e)
}

export function defaultWorkerId(): string {
  return `${os.hostname()}:${process.pid}:${randomUUID().slice(0, 8)}`
}
