// Server side of the bulk state stream (format: ./format.ts). The count in the header and the
// records that follow come from ONE repeatable-read snapshot, read in keyset pages of a few MB,
// so the header never lies while a build is writing, and memory stays flat however large the
// dataset. The snapshot's transaction lives as long as the HTTP response; it ends (and the
// connection returns to the pool) when the stream is done or the client goes away.
import { PassThrough, type Readable } from 'node:stream'
import { Prisma, type PrismaClient } from '@iisan/storage'
import { stateLookup } from './build.ts'
import { CacheError } from './errors.ts'
import { encodeStateStreamHeader, stateRecordBytes, stateStreamBytes, type StateStreamHeader } from './format.ts'
import type { BackboneRef } from './registry.ts'

export interface StateStream {
  header: StateStreamHeader
  /** Exact stream length in bytes (Content-Length). */
  byteLength: number
  stream: Readable
}

export interface StateStreamOptions {
  /** Target bytes per database page (default 4 MiB). */
  pageBytes?: number
  /** Longest a stream may take before its snapshot is abandoned (default 60 min). */
  timeoutMs?: number
}

/**
 * Open the state stream of `datasetId` under `backbone`. Resolves once the header is known
 * (count taken in the snapshot); the records follow on `stream`. Throws CacheError NOT_FOUND for
 * an unknown dataset.
 */
export async function openDatasetStateStream(
  prisma: PrismaClient,
  datasetId: string,
  backbone: BackboneRef,
  options: StateStreamOptions = {},
): Promise<StateStream> {
  const rowsPerItem = backbone.numLayers + 1
  const dataBytes = rowsPerItem * backbone.width * 2
  const recordBytes = stateRecordBytes(backbone)
  const pageSize = Math.max(16, Math.min(8192, Math.floor((options.pageBytes ?? 4 * 2 ** 20) / recordBytes)))
  // Only complete float16 states of this backbone's shape (error rows have empty data).
  const usable = Prisma.sql`hs.error IS NULL AND hs.dtype = 'f16' AND hs.layers = ${rowsPerItem} AND hs.dim = ${backbone.width} AND octet_length(hs.data) = ${dataBytes}`
  const lookup = (columns: Prisma.Sql) => stateLookup(backbone.id, backbone.modality, columns, usable)
  const out = new PassThrough({ highWaterMark: 4 * 2 ** 20 })

  let onHeader!: (h: StateStreamHeader) => void
  let onEarlyError!: (e: unknown) => void
  const headerReady = new Promise<StateStreamHeader>((resolve, reject) => {
    onHeader = resolve
    onEarlyError = reject
  })
  let headerSent = false

  const run = prisma.$transaction(
    async (tx) => {
      const exists = await tx.$queryRaw<{ id: string }[]>`SELECT id::text FROM datasets WHERE id = ${datasetId}::uuid`
      if (!exists.length) throw new CacheError('NOT_FOUND', `dataset ${datasetId} not found`, { datasetId })
      const [{ count }] = await tx.$queryRaw<{ count: number }[]>`
        SELECT count(*)::int AS count
        FROM items i CROSS JOIN LATERAL ${lookup(Prisma.sql`1 AS one`)} s
        WHERE i.dataset_id = ${datasetId}::uuid`
      const header: StateStreamHeader = {
        modality: backbone.modality,
        fingerprint: backbone.fingerprint,
        numLayers: backbone.numLayers,
        width: backbone.width,
        dtype: 'f16',
        count,
      }
      headerSent = true
      onHeader(header)
      if (!(await write(out, encodeStateStreamHeader(header)))) return
      let after = 0
      let sent = 0
      while (sent < count) {
        const rows = await tx.$queryRaw<{ id: number; data: Uint8Array }[]>`
          SELECT i.id, s.data
          FROM items i CROSS JOIN LATERAL ${lookup(Prisma.sql`hs.data`)} s
          WHERE i.dataset_id = ${datasetId}::uuid AND i.id > ${after}
          ORDER BY i.id
          LIMIT ${pageSize}`
        if (rows.length === 0) break
        const n = Math.min(rows.length, count - sent)
        const page = Buffer.allocUnsafe(n * recordBytes)
        for (let r = 0; r < n; r++) {
          const { id, data } = rows[r]
          if (data.byteLength !== dataBytes) throw new Error(`state of item ${id} has ${data.byteLength} bytes, expected ${dataBytes}`)
          const o = r * recordBytes
          page.writeInt32LE(id, o)
          page.set(data, o + 4)
        }
        sent += n
        after = rows[rows.length - 1].id
        if (!(await write(out, page))) return
      }
      if (sent !== count) throw new Error(`state snapshot changed while streaming (${sent} of ${count} records)`)
      out.end()
    },
    { isolationLevel: Prisma.TransactionIsolationLevel.RepeatableRead, maxWait: 30_000, timeout: options.timeoutMs ?? 60 * 60_000 },
  )
  run.catch((err: unknown) => {
    if (!headerSent) onEarlyError(err)
    else out.destroy(err instanceof Error ? err : new Error(String(err)))
  })
  const header = await headerReady
  return { header, byteLength: stateStreamBytes(header), stream: out }
}

/** Write with back-pressure; false when the reader went away (stop producing). */
async function write(out: PassThrough, chunk: Buffer): Promise<boolean> {
  if (out.destroyed) return false
  if (out.write(chunk)) return true
  return new Promise<boolean>((resolve) => {
    const done = (ok: boolean) => {
      out.off('drain', onDrain)
      out.off('close', onClose)
      resolve(ok)
    }
    const onDrain = () => done(true)
    const onClose = () => done(false)
    out.on('drain', onDrain)
    out.on('close', onClose)
  })
}
