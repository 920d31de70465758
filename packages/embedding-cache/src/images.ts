// Where an item's image bytes come from: the uploaded blob (Item.imageBlob) if any, else
// Item.imageRef — a local path, a file:// URL, or an http(s) URL the service can fetch.
//
// Image references come from API clients, so reading them is confined (README "Image references"):
// - local paths and file:// URLs must lie inside the image root (IMAGE_ROOT, default
//   <ARTIFACTS_DIR>/images; relative paths resolve against it). A path outside is refused before
//   the file system is touched, so the error says nothing about what exists there; a symlink
//   inside the root that leads out of it is refused too.
// - http(s) URLs to loopback, private, link-local, CGNAT, multicast or otherwise reserved
//   addresses are refused unless IMAGE_ALLOW_PRIVATE_HOSTS=1. Every address the host name resolves
//   to (dns.lookup) is checked, at connect time — the connection goes to a checked address, so a
//   DNS answer that changes between check and connect cannot slip through — and again on every
//   redirect hop.
// - a response body is streamed with a byte cap (aborted past maxBytes) under one deadline for
//   connect + headers + body.
//
// Failures are classified: a missing file, a 404, a refused reference or an unsupported scheme
// will not get better by retrying (the item is flagged with an error row), while timeouts,
// connection errors and 5xx are transient (the chunk is retried; only its last attempt flags the
// item).
import fs from 'node:fs/promises'
import { constants as fsConstants } from 'node:fs'
import dns from 'node:dns'
import http from 'node:http'
import https from 'node:https'
import net from 'node:net'
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
  /** HTTP deadline for connect + headers + body (default 15 s). */
  timeoutMs?: number
  /** Largest accepted image (default 64 MiB). */
  maxBytes?: number
  /**
   * Directory that local paths and file:// URLs must be inside; null disables them. Default
   * (read at call time): IMAGE_ROOT, else <ARTIFACTS_DIR>/images — see imageSourceDefaults.
   */
  root?: string | null
  /** Fetch http(s) URLs whose host is loopback/private/link-local (default: IMAGE_ALLOW_PRIVATE_HOSTS=1). */
  allowPrivateHosts?: boolean
  /** Host name resolution (default dns.lookup); tests use it to fake DNS answers. */
  lookup?: typeof dns.lookup
}

const DEFAULT_TIMEOUT_MS = 15_000
const DEFAULT_MAX_BYTES = 64 * 2 ** 20
const MAX_REDIRECTS = 5
const TRANSIENT_FS = new Set(['EMFILE', 'ENFILE', 'EAGAIN', 'EBUSY', 'EIO', 'ETIMEDOUT'])
const DISABLED = new Set(['none', 'off', 'disabled'])
const TRUE = new Set(['1', 'true', 'yes', 'on'])

/** The environment's image-source policy (what readItemImage uses for options it is not given). */
export function imageSourceDefaults(env: Record<string, string | undefined> = process.env): { root: string | null; allowPrivateHosts: boolean } {
  const configured = env.IMAGE_ROOT?.trim()
  const artifacts = env.ARTIFACTS_DIR?.trim() || 'artifacts'
  const root = configured ? (DISABLED.has(configured.toLowerCase()) ? null : path.resolve(configured)) : path.resolve(artifacts, 'images')
  return { root, allowPrivateHosts: TRUE.has(env.IMAGE_ALLOW_PRIVATE_HOSTS?.trim().toLowerCase() ?? '') }
}

/** What an image reference points at, once the pure checks of checkImageRef have passed. */
export type ImageTarget = { kind: 'url'; url: URL } | { kind: 'file'; file: string; root: string }

/**
 * The checks of an image reference that need neither the file system nor the network: the scheme,
 * local paths lexically inside the image root, and http(s) hosts that are not a literal private
 * address or a localhost name. The dataset import and POST /v1/items run them up front so a bad
 * reference is refused with the request; readItemImage runs them again (the policy may differ)
 * before the checks only reading can make: symlinks out of the root, every address a host name
 * resolves to, redirects. Null when there is no reference; throws ImageSourceError (permanent).
 */
export function checkImageRef(imageRef: string | null | undefined, options: Pick<ImageSourceOptions, 'root' | 'allowPrivateHosts'> = {}): ImageTarget | null {
  const ref = imageRef?.trim()
  if (!ref) return null
  const defaults = options.root === undefined || options.allowPrivateHosts === undefined ? imageSourceDefaults() : undefined
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(ref)?.[1]?.toLowerCase()
  if (scheme === 'http' || scheme === 'https') {
    let url: URL
    try {
      url = new URL(ref)
    } catch {
      throw new ImageSourceError(`invalid image URL ${ref}`, false)
    }
    assertHostAllowed(url, ref, options.allowPrivateHosts ?? defaults!.allowPrivateHosts)
    return { kind: 'url', url }
  }
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
    file = ref
  }
  const root = options.root === undefined ? defaults!.root : options.root === null ? null : path.resolve(options.root)
  if (root === null) throw new ImageSourceError('local image paths are disabled (IMAGE_ROOT=none)', false)
  const resolved = path.resolve(root, file)
  // a path outside the root never reaches the file system, so the error says nothing about what exists there
  if (!isInside(root, resolved)) throw new ImageSourceError(`image path outside IMAGE_ROOT: ${ref}`, false)
  return { kind: 'file', file: resolved, root }
}

/** The item's image bytes, or null when the item has no image. Throws ImageSourceError. */
export async function readItemImage(
  item: { imageBlob?: Uint8Array | null; imageRef?: string | null },
  options: ImageSourceOptions = {},
): Promise<Uint8Array | null> {
  if (item.imageBlob && item.imageBlob.byteLength > 0) return item.imageBlob
  const target = checkImageRef(item.imageRef, options)
  if (!target) return null
  const ref = item.imageRef!.trim()
  const maxBytes = options.maxBytes ?? DEFAULT_MAX_BYTES
  if (target.kind === 'url') {
    return fetchImage(ref, target.url, {
      timeoutMs: options.timeoutMs ?? DEFAULT_TIMEOUT_MS,
      maxBytes,
      allowPrivateHosts: options.allowPrivateHosts ?? imageSourceDefaults().allowPrivateHosts,
      lookup: options.lookup ?? dns.lookup,
    })
  }
  return readLocalImage(ref, target.file, target.root, maxBytes)
}

/** `child` is `root` or below it (lexically). */
function isInside(root: string, child: string): boolean {
  const rel = path.relative(root, child)
  return rel === '' || (rel !== '..' && !rel.startsWith(`..${path.sep}`) && !path.isAbsolute(rel))
}

/** `file` has passed checkImageRef's lexical confinement to `root`. */
async function readLocalImage(ref: string, file: string, root: string, maxBytes: number): Promise<Uint8Array> {
  let handle: fs.FileHandle | undefined
  try {
    // Symlinks inside the root may not lead out of it.
    const [real, realRoot] = await Promise.all([fs.realpath(file), fs.realpath(root)])
    if (!isInside(realRoot, real)) throw new ImageSourceError(`image path outside IMAGE_ROOT: ${ref}`, false)
    handle = await fs.open(real, fsConstants.O_RDONLY | (fsConstants.O_NOFOLLOW ?? 0) | (fsConstants.O_NONBLOCK ?? 0))
    const stat = await handle.stat()
    if (!stat.isFile()) throw new ImageSourceError(`image ${ref} is not a file`, false)
    if (stat.size > maxBytes) throw new ImageSourceError(`image ${ref} is ${stat.size} bytes (limit ${maxBytes})`, false)
    const bytes = await handle.readFile()
    if (bytes.byteLength > maxBytes) throw new ImageSourceError(`image ${ref} is larger than ${maxBytes} bytes (limit)`, false)
    return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  } catch (err) {
    if (err instanceof ImageSourceError) throw err
    const code = (err as NodeJS.ErrnoException).code ?? ''
    throw new ImageSourceError(`cannot read image ${ref}: ${code || (err as Error).message}`, TRANSIENT_FS.has(code))
  } finally {
    await handle?.close().catch(() => undefined)
  }
}

// ---------------------------------------------------------------------------------------------
// Which addresses an image URL may not reach (unless IMAGE_ALLOW_PRIVATE_HOSTS=1).

const BLOCKED = new net.BlockList()
for (const [prefix, bits] of [
  ['0.0.0.0', 8], // "this network"
  ['10.0.0.0', 8], // private
  ['100.64.0.0', 10], // carrier-grade NAT
  ['127.0.0.0', 8], // loopback
  ['169.254.0.0', 16], // link-local (cloud metadata endpoints)
  ['172.16.0.0', 12], // private
  ['192.0.0.0', 24], // IETF protocol assignments
  ['192.0.2.0', 24], // documentation
  ['192.88.99.0', 24], // 6to4 relay anycast
  ['192.168.0.0', 16], // private
  ['198.18.0.0', 15], // benchmarking
  ['198.51.100.0', 24], // documentation
  ['203.0.113.0', 24], // documentation
  ['224.0.0.0', 4], // multicast
  ['240.0.0.0', 4], // reserved, broadcast
] as const) {
  BLOCKED.addSubnet(prefix, bits, 'ipv4')
}
for (const [prefix, bits] of [
  ['::', 96], // unspecified, loopback, IPv4-compatible (deprecated)
  ['64:ff9b:1::', 48], // local-use NAT64
  ['100::', 64], // discard-only
  ['2001::', 23], // IETF protocol assignments (Teredo, ORCHID, …)
  ['2001:db8::', 32], // documentation
  ['fc00::', 7], // unique local
  ['fe80::', 10], // link-local
  ['fec0::', 10], // site-local (deprecated)
  ['ff00::', 8], // multicast
] as const) {
  BLOCKED.addSubnet(prefix, bits, 'ipv6')
}

/** The 16 bytes of an IPv6 address (net.isIPv6 must hold). */
function ipv6Bytes(address: string): number[] {
  let text = address
  const dotted = /(\d+\.\d+\.\d+\.\d+)$/.exec(text)
  if (dotted) {
    const [a, b, c, d] = dotted[1].split('.').map(Number)
    text = `${text.slice(0, -dotted[1].length)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`
  }
  const [head, tail] = text.includes('::') ? text.split('::') : [text, undefined]
  const h = head ? head.split(':') : []
  const t = tail ? tail.split(':') : []
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t]
  return groups.flatMap((g) => {
    const n = parseInt(g, 16)
    return [n >> 8, n & 255]
  })
}

/** True for loopback, private, link-local and other non-public addresses (IPv4 or IPv6). */
export function isPrivateAddress(input: string): boolean {
  const address = input.replace(/^\[(.*)\]$/, '$1').replace(/%.*$/, '') // [v6] brackets, %zone
  const family = net.isIP(address)
  if (family === 4) return BLOCKED.check(address, 'ipv4')
  if (family !== 6) return true // not an address at all: refuse
  if (BLOCKED.check(address, 'ipv6')) return true // also checks IPv4-mapped ::ffff:a.b.c.d
  const b = ipv6Bytes(address)
  const v4 = (o: number) => b.slice(o, o + 4).join('.')
  // Addresses that embed an IPv4 address a gateway will connect to: NAT64, 6to4, IPv4-mapped.
  if (b.slice(0, 12).join(',') === '0,100,255,155,0,0,0,0,0,0,0,0') return BLOCKED.check(v4(12), 'ipv4')
  if (b[0] === 0x20 && b[1] === 0x02) return BLOCKED.check(v4(2), 'ipv4')
  if (b.slice(0, 10).every((x) => x === 0) && b[10] === 255 && b[11] === 255) return BLOCKED.check(v4(12), 'ipv4')
  return false
}

class PrivateHostError extends Error {
  readonly code = 'EIMAGEPRIVATEHOST'
}

type LookupCallback = (err: NodeJS.ErrnoException | null, address: string | dns.LookupAddress[], family?: number) => void

/** A net `lookup` that resolves every address of the host and refuses the host if any is private. */
function checkedLookup(lookup: typeof dns.lookup) {
  return (hostname: string, options: dns.LookupOptions, callback: LookupCallback): void => {
    lookup(hostname, { ...options, all: true }, (err, addresses) => {
      if (err) return callback(err, '')
      const list = addresses as dns.LookupAddress[]
      if (list.length === 0) return callback(Object.assign(new Error(`${hostname} has no address`), { code: 'ENOTFOUND' }), '')
      if (list.some((a) => isPrivateAddress(a.address))) return callback(new PrivateHostError(hostname), '')
      if (options.all) callback(null, list)
      else callback(null, list[0].address, list[0].family)
    })
  }
}

interface FetchPolicy {
  timeoutMs: number
  maxBytes: number
  allowPrivateHosts: boolean
  lookup: typeof dns.lookup
}

const privateHostError = (url: string) =>
  new ImageSourceError(`image URL ${url} points to a private or loopback address (set IMAGE_ALLOW_PRIVATE_HOSTS=1 to allow)`, false)

/** Names that mean this machine whatever DNS says (RFC 6761 §6.3). */
function isLocalhostName(host: string): boolean {
  const name = host.toLowerCase().replace(/\.$/, '')
  return name === 'localhost' || name.endsWith('.localhost')
}

/**
 * Refuses a URL whose host is a literal private address (connected to without a lookup, so
 * checkedLookup never sees it) or a localhost name. Other names are checked at connect time.
 */
function assertHostAllowed(target: URL, ref: string, allowPrivateHosts: boolean): void {
  if (allowPrivateHosts) return
  const host = target.hostname.replace(/^\[(.*)\]$/, '$1')
  if ((net.isIP(host) && isPrivateAddress(host)) || isLocalhostName(host)) throw privateHostError(ref)
}

async function fetchImage(url: string, first: URL, policy: FetchPolicy): Promise<Uint8Array> {
  const signal = AbortSignal.timeout(policy.timeoutMs)
  let target = first
  for (let hop = 0; ; hop++) {
    if (target.protocol !== 'http:' && target.protocol !== 'https:') {
      throw new ImageSourceError(`image URL ${url} redirects to an unsupported scheme "${target.protocol}"`, false)
    }
    // a redirect may lead anywhere: the first URL's check again, on every hop
    assertHostAllowed(target, url, policy.allowPrivateHosts)
    const res = await get(url, target, policy, signal)
    const status = res.statusCode ?? 0
    const location = res.headers.location
    if ([301, 302, 303, 307, 308].includes(status) && location) {
      res.destroy()
      if (hop >= MAX_REDIRECTS) throw new ImageSourceError(`cannot fetch image ${url}: more than ${MAX_REDIRECTS} redirects`, false)
      try {
        target = new URL(location, target)
      } catch {
        throw new ImageSourceError(`cannot fetch image ${url}: invalid redirect location`, false)
      }
      continue
    }
    if (status < 200 || status >= 300) {
      res.destroy()
      const transient = status >= 500 || status === 408 || status === 429
      throw new ImageSourceError(`cannot fetch image ${url}: HTTP ${status}`, transient)
    }
    const declared = Number(res.headers['content-length'] ?? NaN)
    if (declared > policy.maxBytes) {
      res.destroy()
      throw new ImageSourceError(`image ${url} is ${declared} bytes (limit ${policy.maxBytes})`, false)
    }
    return readBody(url, res, policy, signal)
  }
}

function transportError(url: string, err: unknown, policy: FetchPolicy, signal: AbortSignal): ImageSourceError {
  if (err instanceof ImageSourceError) return err
  if (err instanceof PrivateHostError || (err as { cause?: unknown }).cause instanceof PrivateHostError) return privateHostError(url)
  if (signal.aborted) return new ImageSourceError(`cannot fetch image ${url}: timed out after ${policy.timeoutMs} ms`, true)
  const code = (err as NodeJS.ErrnoException).code
  return new ImageSourceError(`cannot fetch image ${url}: ${code ?? (err as Error).message}`, true)
}

/** One GET; resolves with the response head (body not read). */
function get(url: string, target: URL, policy: FetchPolicy, signal: AbortSignal): Promise<http.IncomingMessage> {
  return new Promise((resolve, reject) => {
    const client = target.protocol === 'https:' ? https : http
    let req: http.ClientRequest
    try {
      req = client.request(target, {
        method: 'GET',
        agent: false, // a fresh connection per request: every connect goes through the checked lookup
        headers: { accept: 'image/*, */*;q=0.8', 'user-agent': 'iisan-embedding-cache' },
        signal,
        ...(policy.allowPrivateHosts ? {} : { lookup: checkedLookup(policy.lookup) as unknown as http.RequestOptions['lookup'] }),
      })
    } catch (err) {
      reject(transportError(url, err, policy, signal))
      return
    }
    req.on('error', (err) => reject(transportError(url, err, policy, signal)))
    req.on('response', resolve)
    req.end()
  })
}

/** The body, streamed with a byte cap: more than maxBytes aborts the transfer. */
function readBody(url: string, res: http.IncomingMessage, policy: FetchPolicy, signal: AbortSignal): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    let total = 0
    let settled = false
    const settle = (fn: () => void) => {
      if (settled) return
      settled = true
      fn()
    }
    res.on('data', (chunk: Buffer) => {
      total += chunk.byteLength
      if (total > policy.maxBytes) {
        settle(() => reject(new ImageSourceError(`image ${url} is larger than ${policy.maxBytes} bytes (limit); transfer aborted`, false)))
        chunks.length = 0
        res.destroy()
        return
      }
      chunks.push(chunk)
    })
    res.on('end', () => {
      if (!res.complete) settle(() => reject(new ImageSourceError(`cannot fetch image ${url}: connection closed before the body was complete`, true)))
      settle(() => {
        const body = Buffer.concat(chunks, total)
        resolve(new Uint8Array(body.buffer, body.byteOffset, body.byteLength))
      })
    })
    res.on('error', (err) => settle(() => reject(transportError(url, err, policy, signal))))
    res.on('close', () => {
      if (!res.complete) settle(() => reject(transportError(url, signal.aborted ? signal.reason : new Error('connection closed before the body was complete'), policy, signal)))
    })
  })
}
