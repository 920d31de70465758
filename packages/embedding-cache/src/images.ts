// Where an item's image bytes come from: the uploaded blob (Item.imageBlob) if any, else
// Item.imageRef — a local path (relative paths resolve against the process's working
// directory), a file:// URL, or an http(s) URL the service can fetch.
//
// Failures are classified: a missing file, a 404 or an unsupported scheme will not get better by
// retrying (the item is flagged with an error row), while timeouts, connection errors and 5xx
// are transient (the chunk is retried; only its last attempt flags the item).
import fs from 'node:fs/promises'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

export class ImageSourceError extends Error {
  constructor(
    message: string,
    /** Worth retrying later (network, 5xx, I/O pressure). */
    readonly transient: boolean,
  ) {
    super(message)
    this.name = 'ImageSourceError'
  }
}

export interface ImageSourceOptions {
  /** HTTP timeout (default 15 s). */
  timeoutMs?: number
  /** Largest accepted image (default 64 MiB). */
  maxBytes?: number
}

const DEFAULT_TIMEOUT_MS = 15_000
const DEFAULT_MAX_BYTES = 64 * 2 ** 20
const TRANSIENT_FS = new Set(['EMFILE', 'ENFILE', 'EAGAIN', 'EBUSY', 'EIO', 'ETIMEDOUT'])

/** The item's image bytes, or null when the item has no image. Throws ImageSourceError. */
export async function readItemImage(
  item: { imageBlob?: Uint8Array | null; imageRef?: string | null },
  options: ImageSourceOptions = {},
): Promise<Uint8Array | null> {
  if (item.imageBlob && item.imageBlob.byteLength > 0) return item.imageBlob
  const ref = item.imageRef?.trim()
  if (!ref) return null
  const maxBytes = options.maxBytes ?? DEFAULT_MAX_BYTES
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(ref)?.[1]?.toLowerCase()
  if (scheme === 'http' || scheme === 'https') return fetchImage(ref, options.timeoutMs ?? DEFAULT_TIMEOUT_MS, maxBytes)
  let file: string
  if (scheme === 'file') {
    try {
      file = fileURLToPath(ref)
    } catch (err) {
      throw new ImageSourceError(`invalid file URL ${ref}: ${(err as Error).message}`, false)
    }
  } else if (scheme) {
    throw new ImageSourceError(`unsupported image URL scheme "${scheme}:" in ${ref} (use a path, file://, http:// or https://)`, false)
  } else {
    file = path.resolve(ref)
  }
  try {
    const stat = await fs.stat(file)
    if (!stat.isFile()) throw new ImageSourceError(`image ${ref} is not a file`, false)
    if (stat.size > maxBytes) throw new ImageSourceError(`image ${ref} is ${stat.size} bytes (limit ${maxBytes})`, false)
    return new Uint8Array(await fs.readFile(file))
  } catch (err) {
    if (err instanceof ImageSourceError) throw err
    const code = (err as NodeJS.ErrnoException).code ?? ''
    throw new ImageSourceError(`cannot read image ${ref}: ${code || (err as Error).message}`, TRANSIENT_FS.has(code))
  }
}

async function fetchImage(url: string, timeoutMs: number, maxBytes: number): Promise<Uint8Array> {
  let res: Response
  try {
    res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs), redirect: 'follow' })
  } catch (err) {
    const cause = (err as { cause?: { code?: string } }).cause?.code
    throw new ImageSourceError(`cannot fetch image ${url}: ${cause ?? (err as Error).message}`, true)
  }
  if (!res.ok) {
    await res.body?.cancel().catch(() => undefined)
    const transient = res.status >= 500 || res.status === 408 || res.status === 429
    throw new ImageSourceError(`cannot fetch image ${url}: HTTP ${res.status}`, transient)
  }
  const declared = Number(res.headers.get('content-length') ?? NaN)
  if (declared > maxBytes) {
    await res.body?.cancel().catch(() => undefined)
    throw new ImageSourceError(`image ${url} is ${declared} bytes (limit ${maxBytes})`, false)
  }
  try {
    const bytes = new Uint8Array(await res.arrayBuffer())
    if (bytes.byteLength > maxBytes) throw new ImageSourceError(`image ${url} is ${bytes.byteLength} bytes (limit ${maxBytes})`, false)
    return bytes
  } catch (err) {
    if (err instanceof ImageSourceError) throw err
    throw new ImageSourceError(`cannot fetch image ${url}: ${(err as Error).message}`, true)
  }
}
