// A hub-shaped static file server (node:http) for download tests: the routes @huggingface/hub
// calls — /api/models/<id>/revision/<rev> (the commit), /api/models/<id>/tree/<rev> (the listing,
// with LFS sha256s for .safetensors files) — and /<id>/resolve/<rev>/<file> with Range support.
// It can cut a transfer off once after N bytes, or serve a file corrupted under its true hash.
import http from 'node:http'
import { createHash } from 'node:crypto'
import type { AddressInfo } from 'node:net'

export const sha256 = (b: Uint8Array | string) => createHash('sha256').update(b).digest('hex')
const gitOid = (b: Buffer) => createHash('sha1').update(`blob ${b.length}\0`).update(b).digest('hex')

interface Repo {
  sha: string
  files: Map<string, Buffer>
}

/** A hub-shaped static server (node:http) over in-memory repositories. */
export class FakeHub {
  readonly repos = new Map<string, Repo>()
  /** file path → bytes after which the next GET of it is cut off (once) */
  readonly dropAfter = new Map<string, number>()
  /** file paths served with one byte flipped (the listing keeps the true hash) */
  readonly corrupt = new Set<string>()
  readonly requests: { url: string; range?: string }[] = []
  private server!: http.Server
  url = ''

  add(id: string, files: Record<string, Buffer>): void {
    this.repos.set(id, { sha: sha256(id).slice(0, 40), files: new Map(Object.entries(files)) })
  }

  async start(): Promise<void> {
    this.server = http.createServer((req, res) => this.handle(req, res))
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve))
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`
  }

  stop(): Promise<void> {
    if (!this.server) return Promise.resolve()
    this.server.closeAllConnections()
    return new Promise((resolve) => this.server.close(() => resolve()))
  }

  private json(res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
    res.writeHead(status, { 'Content-Type': 'application/json', ...headers })
    res.end(JSON.stringify(body))
  }

  private repo(id: string, rev: string, res: http.ServerResponse): Repo | undefined {
    const repo = this.repos.get(id)
    if (!repo) this.json(res, 404, { error: 'Repository not found' }, { 'X-Error-Code': 'RepoNotFound' })
    else if (rev !== 'main' && rev !== repo.sha) this.json(res, 404, { error: 'Invalid rev id: ' + rev }, { 'X-Error-Code': 'RevisionNotFound' })
    else return repo
    return undefined
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const url = new URL(req.url!, 'http://x')
    const range = req.headers.range
    this.requests.push({ url: url.pathname, ...(range ? { range } : {}) })
    let m = /^\/api\/models\/(.+)\/revision\/([^/]+)$/.exec(url.pathname)
    if (m) {
      const repo = this.repo(m[1], decodeURIComponent(m[2]), res)
      if (repo) this.json(res, 200, { _id: repo.sha.slice(0, 24), id: m[1], sha: repo.sha, private: false, gated: false, downloads: 0, likes: 0, lastModified: '2026-01-01T00:00:00.000Z' })
      return
    }
    m = /^\/api\/models\/(.+)\/tree\/([^/]+)$/.exec(url.pathname)
    if (m) {
      const repo = this.repo(m[1], decodeURIComponent(m[2]), res)
      if (!repo) return
      const entries = [...repo.files].map(([p, bytes]) =>
        // big files live in LFS on the hub: their content sha256 is the LFS oid
        p.endsWith('.safetensors')
          ? { type: 'file', path: p, size: bytes.length, oid: gitOid(Buffer.from(`lfs pointer ${p}`)), lfs: { oid: sha256(bytes), size: bytes.length, pointerSize: 134 } }
          : { type: 'file', path: p, size: bytes.length, oid: gitOid(bytes) },
      )
      this.json(res, 200, entries)
      return
    }
    m = /^\/(.+)\/resolve\/([^/]+)\/(.+)$/.exec(url.pathname)
    if (m) {
      const repo = this.repo(m[1], decodeURIComponent(m[2]), res)
      if (!repo) return
      const file = m[3]
      let bytes = repo.files.get(file)
      if (!bytes) return this.json(res, 404, { error: 'Entry not found' }, { 'X-Error-Code': 'EntryNotFound' })
      if (this.corrupt.has(file)) {
        bytes = Buffer.from(bytes)
        bytes[bytes.length >> 1] ^= 0xff
      }
      const headers: Record<string, string> = { ETag: `"${sha256(repo.files.get(file)!)}"`, 'Accept-Ranges': 'bytes', 'Content-Type': 'application/octet-stream' }
      let start = 0
      let end = bytes.length - 1
      const r = range ? /^bytes=(\d+)-(\d*)$/.exec(range) : null
      if (r) {
        start = Number(r[1])
        end = r[2] ? Math.min(Number(r[2]), end) : end
        if (start > end) {
          res.writeHead(416, { 'Content-Range': `bytes */${bytes.length}` })
          return void res.end()
        }
        headers['Content-Range'] = `bytes ${start}-${end}/${bytes.length}`
      }
      const body = bytes.subarray(start, end + 1)
      res.writeHead(r ? 206 : 200, { ...headers, 'Content-Length': String(body.length) })
      const drop = this.dropAfter.get(file)
      if (drop !== undefined && body.length > drop) {
        this.dropAfter.delete(file)
        // send part of the body, then lose the connection as a flaky network would
        res.write(body.subarray(0, drop), () => setTimeout(() => res.socket?.destroy(), 20))
        return
      }
      res.end(body)
      return
    }
    this.json(res, 404, { error: 'not a hub route' })
  }
}

