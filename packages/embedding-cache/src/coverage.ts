// How much of a dataset is cached, per backbone, and how fast builds went. Everything is counted
// from the stored states (the source of truth), so the figures are right whoever computed them
// — a build, another dataset's build with the same items, or a cold-start request.
import { Prisma, type CacheBuild, type Db, type Modality } from '@iisan/storage'
import { keyColumn, stateLookup } from './build.ts'
import type { BackboneRef } from './registry.ts'

export interface CacheBuildView {
  id: string
  datasetId: string
  backboneId: number
  fingerprint: string
  modality: Modality
  status: string
  /** Items of the build's scope (image builds: items with an image). */
  itemsTotal: number
  itemsDone: number
  /** Items whose input could not be encoded (e.g. corrupt image); flagged, not retried. */
  itemsFailed: number
  itemsPending: number
  /** (done + failed) / total, 1 for an empty scope. */
  fraction: number
  /** Items of the scope whose state was computed while the build ran (the rest were cached). */
  itemsEncoded: number
  /** itemsEncoded / (finishedAt or now − startedAt); null before the build started or when it computed nothing. */
  itemsPerSecond: number | null
  error: string | null
  createdAt: string
  startedAt: string | null
  finishedAt: string | null
}

export async function getCacheBuildView(db: Db, id: string): Promise<CacheBuildView | null> {
  const build = await db.cacheBuild.findUnique({ where: { id }, include: { backbone: { select: { modality: true, fingerprint: true } } } })
  if (!build) return null
  return buildView(db, build, build.backbone.modality as Modality, build.backbone.fingerprint)
}

async function buildView(db: Db, build: CacheBuild, modality: Modality, fingerprint: string): Promise<CacheBuildView> {
  const [{ encoded }] = await db.$queryRaw<{ encoded: number }[]>`
    SELECT count(*)::int AS encoded
    FROM items i
    CROSS JOIN LATERAL ${stateLookup(build.backboneId, modality, Prisma.sql`1 AS one`, Prisma.sql`hs.created_at >= ${build.createdAt}`)} s
    WHERE i.dataset_id = ${build.datasetId}::uuid AND i.created_at <= ${build.createdAt}`
  const finished = Math.min(build.itemsTotal, build.itemsDone + build.itemsFailed)
  let itemsPerSecond: number | null = null
  if (build.startedAt) {
    const seconds = ((build.finishedAt ?? new Date()).getTime() - build.startedAt.getTime()) / 1000
    itemsPerSecond = encoded > 0 && seconds > 0 ? encoded / seconds : null
  }
  return {
    id: build.id,
    datasetId: build.datasetId,
    backboneId: build.backboneId,
    fingerprint,
    modality,
    status: build.status,
    itemsTotal: build.itemsTotal,
    itemsDone: build.itemsDone,
    itemsFailed: build.itemsFailed,
    itemsPending: build.itemsTotal - finished,
    fraction: build.itemsTotal === 0 ? 1 : finished / build.itemsTotal,
    itemsEncoded: encoded,
    itemsPerSecond,
    error: build.error,
    createdAt: build.createdAt.toISOString(),
    startedAt: build.startedAt?.toISOString() ?? null,
    finishedAt: build.finishedAt?.toISOString() ?? null,
  }
}

export interface BackboneCoverage {
  backboneId: number
  fingerprint: string
  name: string
  modality: Modality
  numLayers: number
  width: number
  /** Items needing this backbone: all items for text, items with an image for images. */
  total: number
  /** Items with a stored state. */
  done: number
  /** Items whose input failed (error row: corrupt/unreadable image). */
  failed: number
  /** total − done − failed */
  pending: number
  /** Items without an input for this modality (no image): not a failure. */
  absent: number
  /** (done + failed) / total, 1 for total 0. */
  fraction: number
  /** Throughput of the latest build (items/s), null when there is none or it has not started. */
  itemsPerSecond: number | null
  latestBuild: CacheBuildView | null
}

export interface DatasetCoverage {
  datasetId: string
  numItems: number
  backbones: BackboneCoverage[]
}

/** Coverage of a dataset by each backbone; null when the dataset does not exist. */
export async function getDatasetCoverage(db: Db, datasetId: string, backbones: BackboneRef[]): Promise<DatasetCoverage | null> {
  const dataset = await db.dataset.findUnique({ where: { id: datasetId }, select: { id: true } })
  if (!dataset) return null
  const [{ n }] = await db.$queryRaw<{ n: number }[]>`SELECT count(*)::int AS n FROM items WHERE dataset_id = ${datasetId}::uuid`
  const out: BackboneCoverage[] = []
  for (const b of backbones) {
    const key = keyColumn(b.modality)
    const [c] = await db.$queryRaw<{ total: number; done: number; failed: number }[]>`
      SELECT count(*)::int AS total,
             count(s.present) FILTER (WHERE s.error IS NULL)::int AS done,
             count(s.present) FILTER (WHERE s.error IS NOT NULL)::int AS failed
      FROM items i
      LEFT JOIN LATERAL ${stateLookup(b.id, b.modality, Prisma.sql`1 AS present, hs.error`)} s ON true
      WHERE i.dataset_id = ${datasetId}::uuid AND ${key} IS NOT NULL`
    const latest = await db.cacheBuild.findFirst({ where: { datasetId, backboneId: b.id }, orderBy: { createdAt: 'desc' } })
    const latestBuild = latest ? await buildView(db, latest, b.modality, b.fingerprint) : null
    out.push({
      backboneId: b.id,
      fingerprint: b.fingerprint,
      name: b.name,
      modality: b.modality,
      numLayers: b.numLayers,
      width: b.width,
      total: c.total,
      done: c.done,
      failed: c.failed,
      pending: c.total - c.done - c.failed,
      absent: n - c.total,
      fraction: c.total === 0 ? 1 : (c.done + c.failed) / c.total,
      itemsPerSecond: latestBuild?.itemsPerSecond ?? null,
      latestBuild,
    })
  }
  return { datasetId, numItems: n, backbones: out }
}

export type ItemModalityStatus = 'done' | 'failed' | 'pending' | 'absent' | 'disabled'

export interface ItemModalityCoverage {
  status: ItemModalityStatus
  /** Backbone fingerprint (absent when the modality is disabled). */
  fingerprint?: string
  /** Why the input failed (status 'failed'). */
  error?: string
}

export interface ItemCoverage {
  itemId: number
  datasetId: string
  text: ItemModalityCoverage
  image: ItemModalityCoverage
}

