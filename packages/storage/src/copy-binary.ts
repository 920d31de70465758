// Reading large bytea values without text. node-postgres parses every result as text, so a bytea
// arrives as a hex string twice its size (and a V8 string of a hundred megabytes is garbage the
// collector takes its time over: a 1 GiB checkpoint read that way held about 3 GiB more at its
// peak). COPY … TO STDOUT (FORMAT binary) streams the raw bytes instead; this sink parses that
// format for a query of one bytea column and writes each row's value straight into its place.
import { Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import type pg from 'pg'
import { to as copyTo } from 'pg-copy-streams'

// PostgreSQL's binary COPY header: the signature, then an int32 of flags and an int32 extension length
const SIGNATURE = Buffer.from('PGCOPY\n\xff\r\n\0', 'latin1')
const HEADER_BYTES = SIGNATURE.length + 8

type Stage = 'header' | 'extension' | 'tuple' | 'length' | 'field' | 'done'

/** The stream is not what was expected (the rows or their sizes differ from what the caller said). */
export class CopyFormatError extends Error {
  override name = 'CopyFormatError'
}

/**
 * Writes the rows of `COPY (SELECT <one bytea column> …) TO STDOUT (FORMAT binary)` one after
 * another into `target`, and hands each piece to `onBytes` as it lands (a running hash). A NULL,
 * a row of another width, or more bytes than `target` holds fail the stream.
 */
export class CopyBinaryColumnSink extends Writable {
  /** Each row's value length, in order. */
  readonly rowLengths: number[] = []
  /** Bytes written into target so far. */
  written = 0
  private stage: Stage = 'header'
  /** The header or count bytes of a stage not complete yet (they may straddle chunks). */
  private partial = Buffer.alloc(0)
  private skip = 0
  private fieldLeft = 0

  constructor(
    private readonly target: Uint8Array,
    private readonly onBytes: (bytes: Uint8Array) => void = () => undefined,
  ) {
    super()
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, done: (error?: Error | null) => void): void {
    try {
      this.consume(chunk)
      done()
    } catch (error) {
      done(error as Error)
    }
  }

  override _final(done: (error?: Error | null) => void): void {
    done(this.stage === 'done' ? null : new CopyFormatError(`the binary COPY stream ended early (while reading its ${this.stage})`))
  }

  private consume(chunk: Buffer): void {
    let at = 0
    while (at < chunk.length) {
      if (this.stage === 'done') throw new CopyFormatError('bytes after the end of the binary COPY stream')
      if (this.stage === 'extension') {
        const n = Math.min(this.skip, chunk.length - at)
        this.skip -= n
        at += n
        if (this.skip === 0) this.stage = 'tuple'
        continue
      }
      if (this.stage === 'field') {
        const n = Math.min(this.fieldLeft, chunk.length - at)
        const piece = chunk.subarray(at, at + n)
        this.target.set(piece, this.written)
        this.onBytes(piece)
        this.written += n
        this.fieldLeft -= n
        at += n
        if (this.fieldLeft === 0) this.stage = 'tuple'
        continue
      }
      // fixed-size stages: gather their bytes, then act on them
      const need = this.stage === 'header' ? HEADER_BYTES : this.stage === 'tuple' ? 2 : 4
      const take = Math.min(need - this.partial.length, chunk.length - at)
      this.partial = Buffer.concat([this.partial, chunk.subarray(at, at + take)])
      at += take
      if (this.partial.length < need) continue
      const bytes = this.partial
      this.partial = Buffer.alloc(0)
      this.act(bytes)
    }
  }

  private act(bytes: Buffer): void {
    switch (this.stage) {
      case 'header': {
        if (!bytes.subarray(0, SIGNATURE.length).equals(SIGNATURE)) throw new CopyFormatError('not a binary COPY stream (wrong signature)')
        this.skip = bytes.readUInt32BE(SIGNATURE.length + 4)
        this.stage = this.skip ? 'extension' : 'tuple'
        return
      }
      case 'tuple': {
        const fields = bytes.readInt16BE(0)
        if (fields === -1) this.stage = 'done'
        else if (fields === 1) this.stage = 'length'
        else throw new CopyFormatError(`a binary COPY row of ${fields} columns; one bytea column was expected`)
        return
      }
      case 'length': {
        const length = bytes.readInt32BE(0)
        if (length < 0) throw new CopyFormatError('a NULL value in a binary COPY stream of bytes')
        if (this.written + length > this.target.byteLength) throw new CopyFormatError(`the binary COPY rows hold more than the ${this.target.byteLength} bytes expected`)
        this.rowLengths.push(length)
        this.fieldLeft = length
        this.stage = length ? 'field' : 'tuple'
        return
      }
      default:
        throw new CopyFormatError(`binary COPY parser: unexpected stage ${this.stage}`)
    }
  }
}

/**
 * Run `COPY (<select of one bytea column>) TO STDOUT (FORMAT binary)` on a connection of `pool`,
 * writing the rows' values one after another into `target`. Returns each row's length.
 * CopyFormatError when the rows do not fit `target` or are not one bytea column.
 */
export async function copyByteaInto(pool: pg.Pool, select: (client: pg.PoolClient) => string, target: Uint8Array, onBytes?: (bytes: Uint8Array) => void): Promise<number[]> {
  const client = await pool.connect()
  let failed: Error | undefined
  try {
    const sink = new CopyBinaryColumnSink(target, onBytes)
    await pipeline(client.query(copyTo(`COPY (${select(client)}) TO STDOUT (FORMAT binary)`)), sink)
    return sink.rowLengths
  } catch (e) {
    // a connection left in the middle of a COPY is not given back to the pool
    failed = e as Error
    throw e
  } finally {
    client.release(failed)
  }
}
