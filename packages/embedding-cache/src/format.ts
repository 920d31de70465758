// The bulk hidden-state stream ("IISANST1") that GET /v1/datasets/:id/states sends and
// fetchDatasetStates reads. Binary, because a dataset's states are (L+1)·d numbers per item
// (13 × 768 for base models): as JSON arrays they would be ~6× larger and slow to parse.
//
//   offset   size        content
//   0        8           ASCII magic "IISANST1"
//   8        4           uint32 LE   H = byte length of the JSON header
//   12       H           UTF-8 JSON  { "modality": "text" | "image", "fingerprint": <backbone
//                                      fingerprint>, "numLayers": L, "width": d, "dtype": "f16",
//                                      "count": N }
//   12 + H   N × R       records, R = 4 + (L+1)·d·2 bytes each:
//                          int32 LE                Item.id
//                          (L+1)·d float16 LE      the item's states, row-major [L+1][d]
//                                                  (row 0 = embedding output, row l = layer l)
//
// One record per dataset item that has a stored state without error, in ascending Item.id, each
// item at most once; items without the modality (no image) or whose input failed (corrupt image)
// have no record. N is exact: the stream is exactly 12 + H + N·R bytes long (also sent as
// Content-Length), so a reader can allocate its output once and detect truncation.
import type { Modality } from '@iisan/storage'
import { Float16RowsFile } from '@iisan/safetensors/float16-rows-file'
import { decodeFloat16LE } from './float16.ts'

export const STATE_STREAM_MAGIC = 'IISANST1'
export const STATE_STREAM_CONTENT_TYPE = 'application/octet-stream'
const PREFIX_BYTES = 12
const MAX_HEADER_BYTES = 64 * 1024
/** keep: 'float16-file' writes about this many bytes of rows at a time */
const STAGE_BYTES = 1 << 20

/** How a decoder keeps the rows: float32 values, or float16 bit patterns in memory or in a rows file. */
export type StatesKeep = 'float32' | 'float16' | 'float16-file'

export interface StateStreamHeader {
  modality: Modality
  fingerprint: string
  /** L: each record holds L + 1 rows. */
  numLayers: number
  /** d */
  width: number
  dtype: 'f16'
  /** Number of records that follow. */
  count: number
}

export class StateStreamError extends Error {
  readonly code = 'BAD_STATE_STREAM'
  constructor(message: string) {
    super(message)
    this.name = 'StateStreamError'
  }
}

/** Bytes of one record: item id + (L+1)·d float16 values. */
export function stateRecordBytes(header: Pick<StateStreamHeader, 'numLayers' | 'width'>): number {
  return 4 + (header.numLayers + 1) * header.width * 2
}

/** Magic + length + JSON header. */
export function encodeStateStreamHeader(header: StateStreamHeader): Buffer {
  const json = Buffer.from(JSON.stringify(header), 'utf8')
  const out = Buffer.alloc(PREFIX_BYTES + json.length)
  out.write(STATE_STREAM_MAGIC, 0, 'ascii')
  out.writeUInt32LE(json.length, 8)
  json.copy(out, PREFIX_BYTES)
  return out
}

/** Total stream length for a header (what Content-Length says). */
export function stateStreamBytes(header: StateStreamHeader): number {
  return PREFIX_BYTES + Buffer.byteLength(JSON.stringify(header), 'utf8') + header.count * stateRecordBytes(header)
}

function parseHeader(json: string): StateStreamHeader {
  let h: Record<string, unknown>
  try {
    h = JSON.parse(json) as Record<string, unknown>
  } catch {
    throw new StateStreamError('state stream header is not valid JSON')
  }
  const posInt = (k: string, min: number) => {
    const v = h?.[k]
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min) throw new StateStreamError(`state stream header: ${k} must be an integer ≥ ${min}, got ${JSON.stringify(v)}`)
    return v
  }
  if (h?.modality !== 'text' && h?.modality !== 'image') throw new StateStreamError(`state stream header: unknown modality ${JSON.stringify(h?.modality)}`)
  if (h.dtype !== 'f16') throw new StateStreamError(`state stream header: unsupported dtype ${JSON.stringify(h.dtype)}`)
  if (typeof h.fingerprint !== 'string' || !h.fingerprint) throw new StateStreamError('state stream header: fingerprint missing')
  return {
    modality: h.modality,
    fingerprint: h.fingerprint,
    numLayers: posInt('numLayers', 0),
    width: posInt('width', 1),
    dtype: 'f16',
    count: posInt('count', 0),
  }
}

export interface DecodedStates {
  modality: Modality
  fingerprint: string
  /** L (rows per item = L + 1) */
  numLayers: number
  /** d */
  width: number
  /** Item.id of every row of `data`, ascending. */
  itemIds: Int32Array
  /**
   * [rows, L+1, d], one allocation for the whole dataset: float32 values, or — with
   * `keep: 'float16'` — the stream's float16 bit patterns as they are (half the memory; the
   * trainer decodes only the side layers of each batch), or — with `keep: 'float16-file'` — the
   * same bit patterns in a rows file (no process memory; the caller closes it).
   */
  data: Float32Array | Uint16Array | Float16RowsFile
  /** With `selectLayers`: the backbone layers each row holds (otherwise all of 0..L). */
  layers?: number[]
}

/**
 * Incremental reader: push() the bytes as they arrive (any chunking), end() when the transport
 * ends. The output arrays are allocated once, when the header has been read; records are
 * decoded from float16 straight into them (a record split across chunks goes through one small
 * carry buffer).
 */
export class StateStreamDecoder {
  private prefix = new Uint8Array(PREFIX_BYTES)
  private prefixLen = 0
  private headerBytes: Uint8Array | null = null
  private headerLen = 0
  private header: StateStreamHeader | null = null
  private recordLen = 0
  private perItem = 0
  private carry: Uint8Array = new Uint8Array(0)
  private carryLen = 0
  private rows = 0
  private lastId = -Infinity
  private itemIds: Int32Array = new Int32Array(0)
  private data: Float32Array | Uint16Array | Float16RowsFile = new Float32Array(0)
  /** keep: 'float16-file': kept rows gather here and go to the file in one write */
  private staged: { bytes: Uint8Array; firstRow: number; rows: number } | null = null
  private readonly expected: Set<number> | null
  private readonly keep: StatesKeep
  private readonly stageBytes: number
  private readonly selectLayers?: (header: StateStreamHeader) => number[] | undefined
  private layers: number[] | undefined
  private perItemOut = 0

  /**
   * `expectedItemIds`: when given, a record for any other item id is an error.
   * `selectLayers`: keep only these backbone layers of every record (decided once the header,
   * with L and d, has been read) — a trainer needs just its side layers.
   * `stageBytes`: with keep 'float16-file', rows are written about this many bytes at a time.
   */
  constructor(options: { expectedItemIds?: Iterable<number>; keep?: StatesKeep; selectLayers?: (header: StateStreamHeader) => number[] | undefined; stageBytes?: number } = {}) {
    this.expected = options.expectedItemIds ? new Set(options.expectedItemIds) : null
    this.stageBytes = options.stageBytes ?? STAGE_BYTES
    this.keep = options.keep ?? 'float32'
    this.selectLayers = options.selectLayers
  }

  /** The header, once read (null before). */
  get streamHeader(): StateStreamHeader | null {
    return this.header
  }

  push(chunk: Uint8Array): void {
    let p = 0
    const n = chunk.byteLength
    if (this.prefixLen < PREFIX_BYTES) {
      const take = Math.min(PREFIX_BYTES - this.prefixLen, n)
      this.prefix.set(chunk.subarray(0, take), this.prefixLen)
      this.prefixLen += take
      p += take
      if (this.prefixLen < PREFIX_BYTES) return
      const magic = Buffer.from(this.prefix.subarray(0, 8)).toString('latin1')
      if (magic !== STATE_STREAM_MAGIC) throw new StateStreamError(`not a hidden-state stream (magic ${JSON.stringify(magic)}, expected "${STATE_STREAM_MAGIC}")`)
      const len = new DataView(this.prefix.buffer).getUint32(8, true)
      if (len === 0 || len > MAX_HEADER_BYTES) throw new StateStreamError(`state stream header length ${len} out of range`)
      this.headerBytes = new Uint8Array(len)
    }
    if (!this.header) {
      const hb = this.headerBytes!
      const take = Math.min(hb.length - this.headerLen, n - p)
      hb.set(chunk.subarray(p, p + take), this.headerLen)
      this.headerLen += take
      p += take
      if (this.headerLen < hb.length) return
      this.header = parseHeader(Buffer.from(hb).toString('utf8'))
      this.recordLen = stateRecordBytes(this.header)
      this.perItem = (this.header.numLayers + 1) * this.header.width
      this.carry = new Uint8Array(this.recordLen)
      this.itemIds = new Int32Array(this.header.count)
      this.layers = this.selectLayers?.(this.header)
      const badLayer = this.layers?.find((l) => !Number.isInteger(l) || l < 0 || l > this.header!.numLayers)
      if (badLayer !== undefined) throw new StateStreamError(`layer ${badLayer} is outside the stream's 0..${this.header.numLayers}`)
      this.perItemOut = (this.layers?.length ?? this.header.numLayers + 1) * this.header.width
      this.data = this.allocate(this.header.count, this.perItemOut)
    }
    const R = this.recordLen
    if (this.carryLen > 0 && p < n) {
      const take = Math.min(R - this.carryLen, n - p)
      this.carry.set(chunk.subarray(p, p + take), this.carryLen)
      this.carryLen += take
      p += take
      if (this.carryLen < R) return
      this.record(this.carry, 0)
      this.carryLen = 0
    }
    while (n - p >= R) {
      this.record(chunk, p)
      p += R
    }
    if (p < n) {
      this.carry.set(chunk.subarray(p, n), 0)
      this.carryLen = n - p
    }
  }

  private record(bytes: Uint8Array, offset: number): void {
    const header = this.header!
    if (this.rows >= header.count) throw new StateStreamError(`state stream has more than the announced ${header.count} records`)
    const id = (bytes[offset] | (bytes[offset + 1] << 8) | (bytes[offset + 2] << 16) | (bytes[offset + 3] << 24)) | 0
    if (id <= this.lastId) throw new StateStreamError(`state stream records out of order (item ${id} after ${this.lastId})`)
    if (this.expected && !this.expected.has(id)) throw new StateStreamError(`state stream holds item ${id}, which is not among the expected items`)
    this.lastId = id
    this.itemIds[this.rows] = id
    const d = this.header!.width
    // [source offset, value count] pieces of this record to keep, in output order
    const pieces = this.layers ? this.layers.map((l) => [offset + 4 + l * d * 2, d] as const) : [[offset + 4, this.perItem] as const]
    const staged = this.staged
    let out = staged ? staged.rows * this.perItemOut : this.rows * this.perItemOut
    for (const [from, count] of pieces) {
      if (staged) {
        staged.bytes.set(bytes.subarray(from, from + count * 2), out * 2)
      } else if (this.data instanceof Uint16Array) {
        // little-endian bytes straight into the Uint16Array's memory (every platform Node runs on is LE)
        new Uint8Array(this.data.buffer, out * 2, count * 2).set(bytes.subarray(from, from + count * 2))
      } else {
        decodeFloat16LE(bytes, from, count, this.data as Float32Array, out)
      }
      out += count
    }
    this.rows++
    if (staged && ++staged.rows * this.perItemOut * 2 === staged.bytes.byteLength) this.flush()
  }

  private allocate(count: number, perRow: number): Float32Array | Uint16Array | Float16RowsFile {
    if (this.keep === 'float32') return new Float32Array(count * perRow)
    if (this.keep === 'float16') return new Uint16Array(count * perRow)
    const rowsPerWrite = Math.max(1, Math.floor(this.stageBytes / (perRow * 2)))
    this.staged = { bytes: new Uint8Array(rowsPerWrite * perRow * 2), firstRow: 0, rows: 0 }
    return Float16RowsFile.create(count, perRow)
  }

  private flush(): void {
    const staged = this.staged
    if (!staged || staged.rows === 0) return
    ;(this.data as Float16RowsFile).write(staged.firstRow, staged.bytes.subarray(0, staged.rows * this.perItemOut * 2))
    staged.firstRow += staged.rows
    staged.rows = 0
  }

  /** A decode given up (an error, a cut stream): gives back the rows file, if any. */
  abort(): void {
    if (this.data instanceof Float16RowsFile) this.data.close()
  }

  /** Finish: throws when the stream was truncated. */
  end(): DecodedStates {
    const header = this.header
    if (!header) throw new StateStreamError('state stream ended before its header')
    if (this.rows !== header.count || this.carryLen !== 0) {
      this.abort()
      throw new StateStreamError(`state stream truncated: ${this.rows} of ${header.count} records${this.carryLen ? ` (+${this.carryLen} stray bytes)` : ''}`)
    }
    this.flush()
    return {
      modality: header.modality,
      fingerprint: header.fingerprint,
      numLayers: header.numLayers,
      width: header.width,
      itemIds: this.itemIds,
      data: this.data,
      ...(this.layers ? { layers: this.layers } : {}),
    }
  }
}
