// `npm run backbone -- download <hub id>`: a real checkpoint into the backbone cache (layout in
// hub-cache.ts), the way transformers users expect from from_pretrained, but explicit. The hub's
// protocol (commit of a revision, file listing with LFS hashes, resolve URLs, errors) is
// @huggingface/hub's; the transfer itself is a plain ranged GET here, because resuming needs to
// see the status of each answer (206 continues the partial file, 200 means the server ignored the
// range and it starts over), which the library's Blob interface hides.
//
// Only what a backbone needs is fetched: config.json, safetensors weights (one file, or the index
// and its shards), and the tokenizer / image-processor files that exist. Every file is verified
// against the listing (size; sha256 of LFS files; the git blob id of small ones) before it takes
// its final name, and .iisan-download.json is written last, so a folder is either complete and
// verified or recognisably unfinished.
import fs from 'node:fs'
import path from 'node:path'
import { createHash } from 'node:crypto'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { HubApiError, fileDownloadInfo, listFiles, modelInfo, type ListFileEntry } from '@huggingface/hub'
import { parseModelConfig } from './config.ts'
import {
  DEFAULT_REVISION,
  DOWNLOAD_MANIFEST,
  defaultBackboneCacheDir,
  formatHubRef,
  hubEndpoint,
  hubToken,
  parseHubId,
  snapshotDir,
  type HubRef,
} from './hub-cache.ts'

export class BackboneDownloadError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options)
    this.name = 'BackboneDownloadError'
  }
}

const WEIGHTS = 'model.safetensors'
const WEIGHTS_INDEX = 'model.safetensors.index.json'
/** Fetched when the repository has them; which of them a backbone reads is the loader's business. */
const OPTIONAL_FILES = ['tokenizer.json', 'vocab.txt', 'tokenizer_config.json', 'special_tokens_map.json', 'preprocessor_config.json']

export interface DownloadOptions {
  revision?: string
  /** default: BACKBONE_CACHE_DIR / ~/.cache/iisan/backbones */
  cacheDir?: string
  /** default: HF_ENDPOINT / https://huggingface.co */
  endpoint?: string
  /** default: HF_TOKEN */
  token?: string
  /** network failures per file that are resumed from where they stopped (default 5) */
  retries?: number
  /** pause before the first resume, doubled after each (default 1 s) */
  retryDelayMs?: number
  /** a transfer that receives nothing for this long is treated as broken (default 60 s) */
  idleTimeoutMs?: number
  onProgress?(event: DownloadEvent): void
}

export type DownloadEvent =
  | { type: 'plan'; repo: string; commit: string; dir: string }
  | { type: 'file'; path: string; size: number; state: 'download' | 'resume' | 'present'; offset: number }
  | { type: 'bytes'; path: string; done: number; size: number }
  | { type: 'retry'; path: string; offset: number; attempt: number; error: string }
  | { type: 'verified'; path: string; size: number }

export interface ManifestFile {
  path: string
  size: number
  /** content sha256 (LFS files) */
  sha256?: string
  /** git blob id (small files kept in git) */
  gitOid?: string
}

export interface DownloadManifest {
  repo: string
  revision: string
  commit: string
  endpoint: string
  downloadedAt: string
  files: ManifestFile[]
}

export interface DownloadResult extends DownloadManifest {
  dir: string
  /** bytes received by this run, broken transfers included (0 when everything was present) */
  transferred: number
}

interface Ctx {
  ref: HubRef
  commit: string
  endpoint: string
  token?: string
  dir: string
  previous: Map<string, ManifestFile>
  options: DownloadOptions
  transferred: number
}

export async function downloadBackbone(repoId: string, options: DownloadOptions = {}): Promise<DownloadResult> {
  const parsed = parseHubId(repoId)
  if (!parsed || repoId.includes('@')) throw new BackboneDownloadError(`${JSON.stringify(repoId)} is not a hub model id (e.g. bert-base-uncased, google/vit-base-patch16-224)`)
  const ref: HubRef = { repo: parsed.repo, revision: options.revision ?? DEFAULT_REVISION }
  if (!parseHubId(`${ref.repo}@${ref.revision}`)) throw new BackboneDownloadError(`${JSON.stringify(ref.revision)} is not a revision (a branch, tag or commit)`)
  const endpoint = (options.endpoint ?? hubEndpoint()).replace(/\/+$/, '')
  const token = options.token ?? hubToken()
  const hub = { hubUrl: endpoint, ...(token ? { accessToken: token } : {}) }

  const info = await hubCall(ref, endpoint, 'reading the model', () => modelInfo({ name: ref.repo, revision: ref.revision, additionalFields: ['sha'], ...hub }))
  // Pinned to the commit from here on: a push during the download cannot mix two versions.
  const commit = info.sha || ref.revision
  const listing = new Map<string, ListFileEntry>()
  await hubCall(ref, endpoint, 'listing its files', async () => {
    for await (const entry of listFiles({ repo: ref.repo, revision: commit, ...hub })) if (entry.type === 'file') listing.set(entry.path, entry)
  })

  const dir = snapshotDir(ref, options.cacheDir ?? defaultBackboneCacheDir())
  fs.mkdirSync(dir, { recursive: true })
  const manifestFile = path.join(dir, DOWNLOAD_MANIFEST)
  const before = readManifest(manifestFile)
  const ctx: Ctx = { ref, commit, endpoint, token, dir, previous: new Map(before?.files.map((f) => [f.path, f])), options, transferred: 0 }
  options.onProgress?.({ type: 'plan', repo: ref.repo, commit, dir })

  const need = (file: string): ListFileEntry => {
    const entry = listing.get(file)
    if (!entry) throw new BackboneDownloadError(`${formatHubRef(ref)} has no ${file}`)
    return entry
  }
  if (!listing.has('config.json')) throw new BackboneDownloadError(`${formatHubRef(ref)} has no config.json: not a transformers model repository`)
  // Until every file is verified again the folder must not look complete.
  if (before && before.commit !== commit) fs.rmSync(manifestFile, { force: true })

  const files: ManifestFile[] = []
  files.push(await fetchFile(ctx, need('config.json')))
  checkModelType(ref, dir)
  if (listing.has(WEIGHTS)) files.push(await fetchFile(ctx, need(WEIGHTS)))
  else if (listing.has(WEIGHTS_INDEX)) {
    files.push(await fetchFile(ctx, need(WEIGHTS_INDEX)))
    for (const shard of shardsOf(path.join(dir, WEIGHTS_INDEX))) files.push(await fetchFile(ctx, need(shard)))
  } else {
    const other = [...listing.keys()].filter((f) => /\.(bin|h5|msgpack|ckpt|pt)$/.test(f))
    throw new BackboneDownloadError(
      `${formatHubRef(ref)} has no safetensors weights (${WEIGHTS} or ${WEIGHTS_INDEX})${other.length ? `, only ${other.join(', ')}` : ''}: backbones are read from safetensors only`,
    )
  }
  for (const file of OPTIONAL_FILES) if (listing.has(file)) files.push(await fetchFile(ctx, need(file)))

  const manifest: DownloadManifest = { repo: ref.repo, revision: ref.revision, commit, endpoint, downloadedAt: new Date().toISOString(), files }
  const tmp = `${manifestFile}.${process.pid}.tmp`
  fs.writeFileSync(tmp, `${JSON.stringify(manifest, null, 2)}\n`)
  fs.renameSync(tmp, manifestFile)
  return { ...manifest, dir, transferred: ctx.transferred }
}

/** Library calls with the hub's answers turned into messages a user can act on. */
async function hubCall<T>(ref: HubRef, endpoint: string, what: string, call: () => Promise<T>): Promise<T> {
  try {
    return await call()
  } catch (e) {
    const id = formatHubRef(ref)
    if (e instanceof HubApiError) {
      // the hub answers 401 rather than 404 for a repository it will not admit exists
      if (e.statusCode === 404 || e.statusCode === 401) {
        // the hub's own words ("Repository not found", "Invalid rev id: v9"), not the URL in the message
        const said = String((e.data as { error?: unknown } | undefined)?.error ?? '')
        const revision = /\brev/i.test(said) && !/repository/i.test(said) ? ` (or its revision ${ref.revision})` : ''
        throw new BackboneDownloadError(
          `${id}: repository${revision} not found on ${endpoint} (HTTP ${e.statusCode}). Check the id (e.g. bert-base-uncased, google/vit-base-patch16-224); gated or private models need HF_TOKEN`,
          { cause: e },
        )
      }
      if (e.statusCode === 403) throw new BackboneDownloadError(`${id}: access denied by ${endpoint} (HTTP 403): accept the model's terms on the hub and set HF_TOKEN`, { cause: e })
      throw new BackboneDownloadError(`${id}: ${endpoint} answered HTTP ${e.statusCode} while ${what}: ${firstLine(e.message)}`, { cause: e })
    }
    if (e instanceof BackboneDownloadError) throw e
    throw new BackboneDownloadError(`${id}: cannot reach ${endpoint} while ${what}: ${networkReason(e)} (HF_ENDPOINT sets another hub or mirror)`, { cause: e })
  }
}

function checkModelType(ref: HubRef, dir: string): void {
  const file = path.join(dir, 'config.json')
  try {
    parseModelConfig(JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>, file)
  } catch (e) {
    // before the weights: no point in fetching gigabytes the loader will refuse
    throw new BackboneDownloadError(`${formatHubRef(ref)} cannot be used as a backbone: ${(e as Error).message}`)
  }
}

function shardsOf(indexFile: string): string[] {
  let map: unknown
  try {
    map = (JSON.parse(fs.readFileSync(indexFile, 'utf8')) as { weight_map?: unknown }).weight_map
  } catch (e) {
    throw new BackboneDownloadError(`${indexFile} is not valid JSON: ${(e as Error).message}`)
  }
  if (!map || typeof map !== 'object') throw new BackboneDownloadError(`${indexFile} has no weight_map`)
  const shards = [...new Set(Object.values(map as Record<string, unknown>).map(String))].sort()
  const bad = shards.find((s) => s.includes('/') || s.includes('\\') || s.startsWith('.'))
  if (bad) throw new BackboneDownloadError(`${indexFile} names a shard outside the folder: ${bad}`)
  return shards
}

function readManifest(file: string): DownloadManifest | undefined {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as DownloadManifest
  } catch {
    return undefined
  }
}

function expectation(entry: ListFileEntry): ManifestFile {
  return entry.lfs ? { path: entry.path, size: entry.lfs.size, sha256: entry.lfs.oid } : { path: entry.path, size: entry.size, ...(entry.oid ? { gitOid: entry.oid } : {}) }
}

async function digest(file: string, want: ManifestFile): Promise<string | undefined> {
  if (want.sha256) return hashFile(file, createHash('sha256'))
  if (want.gitOid) {
    // git's blob id: sha1 over "blob <size>\0" and the content
    const hash = createHash('sha1').update(`blob ${fs.statSync(file).size}\0`)
    return hashFile(file, hash)
  }
  return undefined
}

async function hashFile(file: string, hash: ReturnType<typeof createHash>): Promise<string> {
  for await (const chunk of fs.createReadStream(file)) hash.update(chunk as Buffer)
  return hash.digest('hex')
}

const sameFile = (a: ManifestFile | undefined, b: ManifestFile): boolean => !!a && a.size === b.size && a.sha256 === b.sha256 && a.gitOid === b.gitOid

async function fetchFile(ctx: Ctx, entry: ListFileEntry): Promise<ManifestFile> {
  const want = expectation(entry)
  const target = path.join(ctx.dir, entry.path)
  const part = `${target}.incomplete`
  const emit = ctx.options.onProgress ?? (() => {})
  const size = (f: string): number => (fs.existsSync(f) ? fs.statSync(f).size : -1)

  if (size(target) === want.size) {
    // verified by an earlier run of the same commit: trust it; otherwise check the bytes we have
    if (sameFile(ctx.previous.get(entry.path), want) || (await digest(target, want)) === (want.sha256 ?? want.gitOid)) {
      emit({ type: 'file', path: entry.path, size: want.size, state: 'present', offset: want.size })
      return want
    }
  }
  const location = await hubCall(ctx.ref, ctx.endpoint, `locating ${entry.path}`, () =>
    fileDownloadInfo({ repo: ctx.ref.repo, path: entry.path, revision: ctx.commit, hubUrl: ctx.endpoint, ...(ctx.token ? { accessToken: ctx.token } : {}) }),
  )
  if (!location) throw new BackboneDownloadError(`${formatHubRef(ctx.ref)}: ${entry.path} is listed but cannot be downloaded`)
  if (location.size !== want.size) {
    throw new BackboneDownloadError(`${formatHubRef(ctx.ref)}: ${entry.path} is listed with ${want.size} bytes but served with ${location.size}`)
  }
  if (size(part) > want.size) fs.rmSync(part)
  const resumed = size(part) > 0
  emit({ type: 'file', path: entry.path, size: want.size, state: resumed ? 'resume' : 'download', offset: Math.max(0, size(part)) })

  const retries = ctx.options.retries ?? 5
  let delay = ctx.options.retryDelayMs ?? 1000
  let failures = 0
  let restartedClean = !resumed
  for (;;) {
    const offset = Math.max(0, size(part))
    if (offset < want.size) {
      try {
        await transfer(ctx, location.url, part, offset, want.size, (done) => emit({ type: 'bytes', path: entry.path, done, size: want.size }))
      } catch (e) {
        if (e instanceof BackboneDownloadError || ++failures > retries) {
          throw e instanceof BackboneDownloadError
            ? e
            : new BackboneDownloadError(`${entry.path}: download broken off at ${size(part)} of ${want.size} bytes (${networkReason(e)}); run the command again to resume`, { cause: e })
        }
        emit({ type: 'retry', path: entry.path, offset: Math.max(0, size(part)), attempt: failures, error: networkReason(e) })
        await new Promise((r) => setTimeout(r, delay))
        delay *= 2
        continue
      }
    }
    const got = size(part)
    const hash = got === want.size ? await digest(part, want) : undefined
    if (got === want.size && hash === (want.sha256 ?? want.gitOid)) break
    // A partial file from an earlier run may be of another version of the file: one clean retry.
    if (!restartedClean) {
      restartedClean = true
      fs.rmSync(part, { force: true })
      continue
    }
    fs.rmSync(part, { force: true })
    const what = got !== want.size ? `${got} bytes instead of ${want.size}` : `${want.sha256 ? 'sha256' : 'git blob id'} ${hash} instead of ${want.sha256 ?? want.gitOid}`
    throw new BackboneDownloadError(`${entry.path}: the downloaded file does not match the hub's listing (${what}): it is corrupt or was changed on the server; removed it — run the command again`)
  }
  fs.renameSync(part, target)
  emit({ type: 'verified', path: entry.path, size: want.size })
  return want
}

/** One ranged GET appended to `part`; throws on a broken transfer (the caller resumes). */
async function transfer(ctx: Ctx, url: string, part: string, offset: number, total: number, onBytes: (done: number) => void): Promise<void> {
  const abort = new AbortController()
  const idleMs = ctx.options.idleTimeoutMs ?? 60_000
  let idle = setTimeout(() => abort.abort(new Error(`no data for ${idleMs / 1000} s`)), idleMs)
  const touch = () => {
    clearTimeout(idle)
    idle = setTimeout(() => abort.abort(new Error(`no data for ${idleMs / 1000} s`)), idleMs)
  }
  try {
    const headers: Record<string, string> = {}
    if (offset > 0) headers.Range = `bytes=${offset}-`
    // only to the hub itself; fetch drops it on a redirect to another origin (the CDN)
    if (ctx.token && new URL(url).origin === new URL(ctx.endpoint).origin) headers.Authorization = `Bearer ${ctx.token}`
    const res = await fetch(url, { headers, signal: abort.signal })
    let start = offset
    if (res.status === 206) {
      const from = Number(/bytes (\d+)-/.exec(res.headers.get('content-range') ?? '')?.[1])
      if (from !== offset) throw new Error(`asked for bytes from ${offset}, got a range from ${from}`)
    } else if (res.status === 200) {
      start = 0 // the server ignored the range: the whole file again
    } else {
      await res.body?.cancel()
      const message = `HTTP ${res.status} for ${new URL(url).pathname}`
      if (res.status >= 500 || res.status === 429 || res.status === 416) throw new Error(message)
      throw new BackboneDownloadError(`${formatHubRef(ctx.ref)}: ${message}`)
    }
    if (!res.body) throw new Error('empty response')
    let done = start
    onBytes(done)
    const out = fs.createWriteStream(part, { flags: start > 0 ? 'a' : 'w' })
    // A broken transfer rejects the pipeline while a write may still be under way: the partial
    // file's size (where the next attempt resumes) is only final once the stream has closed.
    const closed = new Promise<void>((resolve) => out.once('close', () => resolve()))
    try {
      await pipeline(
        Readable.fromWeb(res.body as import('node:stream/web').ReadableStream),
        async function* (source: AsyncIterable<Buffer>) {
          for await (const chunk of source) {
            touch()
            done += chunk.length
            ctx.transferred += chunk.length
            if (done > total) throw new BackboneDownloadError(`${path.basename(part, '.incomplete')}: the server sent more than the listed ${total} bytes`)
            onBytes(done)
            yield chunk
          }
        },
        out,
      )
    } finally {
      out.destroy() // a no-op after the pipeline ended it; otherwise (it never started) it closes now
      await closed
    }
  } finally {
    clearTimeout(idle)
  }
}

function firstLine(s: string): string {
  return s.split('\n')[0]
}

/** fetch's "fetch failed" / "terminated" hide the useful part in the cause. */
function networkReason(e: unknown): string {
  const err = e as { message?: string; cause?: { code?: string; message?: string } }
  const cause = err?.cause
  const detail = cause?.code ?? cause?.message
  return detail ? `${err.message}: ${detail}` : String(err?.message ?? e)
}
