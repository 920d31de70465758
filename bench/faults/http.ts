/** HTTP helpers of bench/faults.ts: a small JSON client of the API, and raw requests over node:net. */
import net from 'node:net'

// API responses are read loosely, as a client would
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Json = any

export interface ApiResponse {
  status: number
  body: Json
  headers: Headers
}

/** A JSON client of one API process (with the API key when there is one). */
export class ApiClient {
  constructor(
    readonly base: string,
    readonly apiKey?: string,
  ) {}

  async request(method: string, path: string, body?: unknown, timeoutMs = 60_000): Promise<ApiResponse> {
    const headers: Record<string, string> = {}
    if (this.apiKey) headers.authorization = `Bearer ${this.apiKey}`
    if (body !== undefined) headers['content-type'] = 'application/json'
    const res = await fetch(`${this.base}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal: AbortSignal.timeout(timeoutMs) })
    const text = await res.text()
    let parsed: Json = text
    try {
      parsed = text ? JSON.parse(text) : null
    } catch {
      // not JSON: keep the text
    }
    return { status: res.status, body: parsed, headers: res.headers }
  }

  get(path: string, timeoutMs?: number) {
    return this.request('GET', path, undefined, timeoutMs)
  }

  post(path: string, body: unknown, timeoutMs?: number) {
    return this.request('POST', path, body, timeoutMs)
  }

  /** `expect` or throw with the response. */
  async must(method: string, path: string, body: unknown, expect: number, timeoutMs?: number): Promise<Json> {
    const res = await this.request(method, path, body, timeoutMs)
    if (res.status !== expect) throw new Error(`${method} ${path}: expected ${expect}, got ${res.status} ${JSON.stringify(res.body).slice(0, 500)}`)
    return res.body
  }
}

export interface RawResponse {
  /** 0 when no status line came back (the connection closed or timed out first). */
  status: number
  headers: Record<string, string>
  body: string
  /** why there was no status, when status is 0 */
  error?: string
  ms: number
}

/**
 * One request over a fresh socket, the request line and headers byte for byte as given (`head`
 * is everything before the blank line, without it). Never rejects: a connection that closes or
 * stays silent for `timeoutMs` gives status 0.
 */
export function rawRequest(port: number, head: string, body: Buffer | string = '', timeoutMs = 15_000): Promise<RawResponse> {
  const t0 = Date.now()
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1')
    const chunks: Buffer[] = []
    let settled = false
    const finish = (error?: string) => {
      if (settled) return
      settled = true
      socket.destroy()
      const text = Buffer.concat(chunks).toString('latin1')
      const status = /^HTTP\/1\.[01] (\d{3})/.exec(text)
      const split = text.indexOf('\r\n\r\n')
      const headers: Record<string, string> = {}
      for (const line of (split < 0 ? text : text.slice(0, split)).split('\r\n').slice(1)) {
        const colon = line.indexOf(':')
        if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim()
      }
      resolve({
        status: status ? Number(status[1]) : 0,
        headers,
        body: split < 0 ? '' : Buffer.from(text.slice(split + 4), 'latin1').toString('utf8'),
        error: status ? undefined : (error ?? `no status line: ${JSON.stringify(text.slice(0, 120))}`),
        ms: Date.now() - t0,
      })
    }
    socket.setTimeout(timeoutMs, () => finish(`no answer within ${timeoutMs} ms`))
    socket.on('data', (c) => chunks.push(c))
    socket.on('error', (e) => finish(e.message))
    socket.on('close', () => finish())
    // write, not end: a half-closed socket makes Node's server abort the request in flight
    socket.write(Buffer.concat([Buffer.from(`${head}\r\n\r\n`, 'latin1'), typeof body === 'string' ? Buffer.from(body, 'utf8') : body]))
  })
}

/** Runs `tasks` `width` at a time. */
export async function pooled<T>(tasks: (() => Promise<T>)[], width = 8): Promise<T[]> {
  const results: T[] = new Array(tasks.length)
  let next = 0
  await Promise.all(
    Array.from({ length: Math.min(width, tasks.length) }, async () => {
      while (next < tasks.length) {
        const i = next++
        results[i] = await tasks[i]()
      }
    }),
  )
  return results
}

/** A small seeded PRNG (mulberry32), so a fuzz run can be repeated. */
export function rng(seed: number) {
  let a = seed >>> 0
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
  return {
    next,
    int: (n: number) => Math.floor(next() * n),
    pick: <T>(xs: readonly T[]): T => xs[Math.floor(next() * xs.length)],
    chance: (p: number) => next() < p,
  }
}
export type Rng = ReturnType<typeof rng>
