import { Prisma, type Backbone, type HiddenState } from './generated/prisma/client.ts'
import { json, toBytes, type Db, type JsonInput } from './client.ts'
import { StorageError } from './errors.ts'

export type Modality = 'text' | 'image'
export type HiddenStateDtype = 'f16' | 'f32'

export interface BackboneInput {
  fingerprint: string
  modality: Modality
  modelType: string
  name?: string | null
  numLayers: number
  hiddenSize: number
  config: JsonInput
  location: string
}

/** Register a backbone by fingerprint (idempotent; location/name are refreshed). */
export async function upsertBackbone(db: Db, input: BackboneInput): Promise<Backbone> {
  const { fingerprint, ...rest } = input
  return db.backbone.upsert({
    where: { fingerprint },
    create: { fingerprint, ...rest, config: json(rest.config), name: rest.name ?? null },
    update: { location: rest.location, name: rest.name ?? null },
  })
}

export async function getBackboneByFingerprint(db: Db, fingerprint: string): Promise<Backbone | null> {
  return db.backbone.findUnique({ where: { fingerprint } })
}

export interface HiddenStateInput {
  contentHash: string
  dtype: HiddenStateDtype
  layers: number
  dim: number
  /** layers × dim values, row-major, little-endian; empty when `error` is set. */
  data: Uint8Array
  error?: string | null
}

/** Store hidden states; rows that already exist (same backbone + hash) are left untouched. Returns rows inserted. */
export async function saveHiddenStates(db: Db, backboneId: number, rows: HiddenStateInput[]): Promise<number> {
  if (rows.length === 0) return 0
  for (const r of rows) {
    const width = r.dtype === 'f16' ? 2 : 4
    if (!r.error && r.data.byteLength !== r.layers * r.dim * width) {
      throw new StorageError('INVALID_INPUT', `hidden state ${r.contentHash}: ${r.data.byteLength} bytes, expected ${r.layers}×${r.dim}×${width}`)
    }
  }
  const { count } = await db.hiddenState.createMany({
    data: rows.map((r) => ({
      backboneId,
      contentHash: r.contentHash,
      dtype: r.dtype,
      layers: r.layers,
      dim: r.dim,
      data: toBytes(r.data),
      error: r.error ?? null,
    })),
    skipDuplicates: true,
  })
  return count
}

/** Hidden states of `backboneId` for the given content hashes (missing ones are absent from the map). */
export async function loadHiddenStates(db: Db, backboneId: number, contentHashes: string[]): Promise<Map<string, HiddenState>> {
  const rows = await db.hiddenState.findMany({ where: { backboneId, contentHash: { in: contentHashes } } })
  return new Map(rows.map((r) => [r.contentHash, r]))
}

/** The subset of `contentHashes` that has no row for `backboneId` yet (order preserved, deduplicated). */
export async function missingHiddenStates(db: Db, backboneId: number, contentHashes: string[]): Promise<string[]> {
  const unique = [...new Set(contentHashes)]
  if (unique.length === 0) return []
  const present = await db.hiddenState.findMany({
    where: { backboneId, contentHash: { in: unique } },
    select: { contentHash: true },
  })
  const have = new Set(present.map((r) => r.contentHash))
  return unique.filter((h) => !have.has(h))
}

export type CacheBuildStatus = 'queued' | 'running' | 'completed' | 'failed' | 'cancelled'


export interface CollectedStates {
  backboneId: number
  fingerprint: string
  modality: Modality
  name: string | null
  /** hidden-state rows removed */
  states: number
  bytes: number
}

// Which item column holds the key of a modality's states (see Item.textHash / Item.imageHash).
const KEY_COLUMN: Record<Modality, Prisma.Sql> = { text: Prisma.sql`text_hash`, image: Prisma.sql`image_hash` }

/**
 * Garbage-collects the cache: removes the hidden states no item of any dataset references any
 * more (what deleting datasets leaves behind), per backbone. States are written only for items
 * that exist, so this is safe while the services run; a state removed here that is needed again
 * (the same title imported later) is simply computed again.
 */
export async function removeOrphanHiddenStates(db: Db): Promise<CollectedStates[]> {
  const removed: CollectedStates[] = []
  for (const modality of Object.keys(KEY_COLUMN) as Modality[]) {
    // one anti-join per modality: an OR of both would be a subquery per state row
    const rows = await db.$queryRaw<Omit<CollectedStates, 'modality'>[]>`
      WITH gone AS (
        DELETE FROM hidden_states h USING backbones b
        WHERE b.id = h.backbone_id AND b.modality = ${modality}
          AND NOT EXISTS (SELECT 1 FROM items i WHERE i.${KEY_COLUMN[modality]} = h.content_hash)
        RETURNING h.backbone_id, octet_length(h.data) AS bytes
      )
      SELECT b.id AS "backboneId", b.fingerprint, b.name, count(*)::int AS states, sum(g.bytes)::float8 AS bytes
      FROM gone g JOIN backbones b ON b.id = g.backbone_id
      GROUP BY b.id ORDER BY b.id`
    removed.push(...rows.map((r) => ({ ...r, modality })))
  }
  return removed
}
