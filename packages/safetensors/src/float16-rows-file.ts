// Rows of float16 values kept in a temporary file and read back one row at a time (pread), for
// data a process needs a few rows of at a time but all of, over and over: IISAN's cached
// backbone states while it trains (issue 12). Held in memory they were the largest part of a
// training process (0.44 GB for Scientific at base shapes); in a file they cost page cache, which
// the kernel keeps warm while there is room and drops under pressure, not resident memory, and a
// catalogue larger than RAM still trains.
//
// The file is unlinked as soon as it is open: no run, not even a killed one, leaves it behind, and
// the disk space goes back when the descriptor is closed (close(), or the owner being collected).
// Worker threads share the process's descriptors, so a thread attaches to the same file by its
// fd; reads are positional, so they need no lock.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'

/** What crosses to a worker thread (structured clone keeps the fields, not the class). */
export interface Float16RowsFileHandle {
  fd: number
  rows: number
  valuesPerRow: number
}

// The owner of a file forgotten without close(): its descriptor (and disk space) goes back at GC.
const closeForgotten = new FinalizationRegistry<number>((fd) => fs.close(fd, () => undefined))

export class Float16RowsFile implements Float16RowsFileHandle {
  private closed = false

  private constructor(
    readonly fd: number,
    readonly rows: number,
    readonly valuesPerRow: number,
    private readonly owner: boolean,
  ) {}

  /** An empty (zero) file of `rows` × `valuesPerRow` float16 values in `dir` (default: the OS temp folder). */
  static create(rows: number, valuesPerRow: number, dir: string = os.tmpdir()): Float16RowsFile {
    if (!Number.isInteger(rows) || rows < 0 || !Number.isInteger(valuesPerRow) || valuesPerRow <= 0) {
      throw new RangeError(`a rows file needs whole rows ≥ 0 and values per row > 0 (got ${rows} × ${valuesPerRow})`)
    }
    const file = path.join(dir, `iisan-rows-${process.pid}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}.f16`)
    const fd = fs.openSync(file, 'wx+', 0o600)
    try {
      fs.unlinkSync(file)
      fs.ftruncateSync(fd, rows * valuesPerRow * 2)
    } catch (err) {
      fs.closeSync(fd)
      throw err
    }
    const rowsFile = new Float16RowsFile(fd, rows, valuesPerRow, true)
    closeForgotten.register(rowsFile, fd, rowsFile)
    return rowsFile
  }

  /** The file another thread of this process created (its handle); closing stays with the owner. */
  static attach(handle: Float16RowsFileHandle): Float16RowsFile {
    return new Float16RowsFile(handle.fd, handle.rows, handle.valuesPerRow, false)
  }

  static isHandle(value: unknown): value is Float16RowsFileHandle {
    return typeof value === 'object' && value !== null && !ArrayBuffer.isView(value) && typeof (value as Float16RowsFileHandle).fd === 'number'
  }

  /** rows × valuesPerRow, as an array of the values would have. */
  get length(): number {
    return this.rows * this.valuesPerRow
  }

  get handle(): Float16RowsFileHandle {
    return { fd: this.fd, rows: this.rows, valuesPerRow: this.valuesPerRow }
  }

  /** Whole rows from `firstRow` on: float16 bit patterns, little-endian bytes. */
  write(firstRow: number, bytes: Uint8Array): void {
    this.open()
    const rowBytes = this.valuesPerRow * 2
    if (bytes.byteLength % rowBytes !== 0) throw new RangeError(`${bytes.byteLength} bytes are not whole rows of ${rowBytes}`)
    if (firstRow < 0 || firstRow + bytes.byteLength / rowBytes > this.rows) throw new RangeError(`rows ${firstRow}.. outside the file's ${this.rows}`)
    let done = 0
    while (done < bytes.byteLength) done += fs.writeSync(this.fd, bytes, done, bytes.byteLength - done, firstRow * rowBytes + done)
  }

  /** Row `row`'s values into `into` (valuesPerRow float16 bit patterns). */
  readRow(row: number, into: Uint16Array): void {
    this.open()
    if (row < 0 || row >= this.rows) throw new RangeError(`row ${row} outside the file's ${this.rows}`)
    if (into.length < this.valuesPerRow) throw new RangeError(`a row holds ${this.valuesPerRow} values; the buffer ${into.length}`)
    const bytes = new Uint8Array(into.buffer, into.byteOffset, this.valuesPerRow * 2)
    let done = 0
    while (done < bytes.byteLength) {
      const n = fs.readSync(this.fd, bytes, done, bytes.byteLength - done, row * bytes.byteLength + done)
      if (n === 0) throw new Error(`the rows file ended inside row ${row}`)
      done += n
    }
  }

  /** Gives the file back (owner only; a thread's attached view just stops reading). */
  close(): void {
    if (this.closed) return
    this.closed = true
    if (!this.owner) return
    closeForgotten.unregister(this)
    fs.closeSync(this.fd)
  }

  private open(): void {
    if (this.closed) throw new Error('the rows file is closed')
  }
}
