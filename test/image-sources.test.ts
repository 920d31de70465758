// Reading item image references safely (packages/embedding-cache/src/images.ts): local paths are
// confined to IMAGE_ROOT, http(s) URLs to private/loopback hosts are refused unless allowed,
// bodies are streamed under a byte cap and a deadline.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import http from 'node:http'
import type dns from 'node:dns'
import { execFileSync } from 'node:child_process'
import { pathToFileURL } from 'node:url'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { ImageSourceError, imageSourceDefaults, isPrivateAddress, readItemImage } from '@iisan/embedding-cache/images'

let tmp: string
let root: string
let server: http.Server
let base: string
const requests: string[] = []
const IMAGE = Buffer.from('not really a png, but bytes are bytes')
let streamClosed: Promise<void> = Promise.resolve()

beforeAll(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'iisan-image-sources-'))
  root = path.join(tmp, 'root')
  fs.mkdirSync(path.join(root, 'sub'), { recursive: true })
  fs.mkdirSync(path.join(tmp, 'outside'))
  fs.writeFileSync(path.join(root, 'a.png'), IMAGE)
  fs.writeFileSync(path.join(root, 'sub', 'b.png'), IMAGE)
  fs.writeFileSync(path.join(tmp, 'outside', 'secret.png'), 'secret')
  fs.symlinkSync(path.join(tmp, 'outside', 'secret.png'), path.join(root, 'escape.png'))
  fs.symlinkSync(path.join(root, 'a.png'), path.join(root, 'alias.png'))

  server = http.createServer((req, res) => {
    requests.push(req.url ?? '')
    const url = req.url ?? ''
    if (url === '/a.png') res.writeHead(200, { 'content-type': 'image/png' }).end(IMAGE)
    else if (url === '/redirect') res.writeHead(302, { location: '/a.png' }).end()
    else if (url === '/loop') res.writeHead(302, { location: '/loop' }).end()
    else if (url === '/to-file') res.writeHead(302, { location: pathToFileURL(path.join(root, 'a.png')).href }).end()
    else if (url === '/flaky') res.writeHead(503).end('try later')
    else if (url === '/declared-huge') res.writeHead(200, { 'content-length': String(10 * 2 ** 20) }).end()
    else if (url === '/endless') {
      // chunked, no Content-Length, never ends by itself
      res.writeHead(200, { 'content-type': 'image/png' })
      const chunk = Buffer.alloc(16 * 1024, 1)
      const timer = setInterval(() => res.write(chunk), 1)
      streamClosed = new Promise((resolve) =>
        res.on('close', () => {
          clearInterval(timer)
          resolve()
        }),
      )
    } else if (url === '/stall') {
      res.writeHead(200, { 'content-type': 'image/png' })
      res.write(Buffer.alloc(10))
    } else res.writeHead(404).end()
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  base = `http://127.0.0.1:${(server.address() as { port: number }).port}`
})

afterAll(async () => {
  server.closeAllConnections()
  await new Promise((r) => server.close(r))
  fs.rmSync(tmp, { recursive: true, force: true })
})

const saved = { IMAGE_ROOT: process.env.IMAGE_ROOT, IMAGE_ALLOW_PRIVATE_HOSTS: process.env.IMAGE_ALLOW_PRIVATE_HOSTS, ARTIFACTS_DIR: process.env.ARTIFACTS_DIR }
afterEach(() => {
  for (const [k, v] of Object.entries(saved)) {
    if (v === undefined) delete process.env[k]
    else process.env[k] = v
  }
})

/** The ImageSourceError readItemImage rejects with. */
async function failure(ref: string, options: Parameters<typeof readItemImage>[1] = {}): Promise<ImageSourceError> {
  const err = await readItemImage({ imageRef: ref }, options).then(
    () => null,
    (e: unknown) => e,
  )
  expect(err).toBeInstanceOf(ImageSourceError)
  return err as ImageSourceError
}

describe('local paths and file:// URLs', () => {
  it('reads images inside the root: absolute, relative to the root, file://, symlink within the root', async () => {
    for (const ref of [path.join(root, 'a.png'), 'a.png', 'sub/b.png', './sub/../a.png', pathToFileURL(path.join(root, 'sub', 'b.png')).href, path.join(root, 'alias.png')]) {
      expect(Buffer.from((await readItemImage({ imageRef: ref }, { root }))!)).toEqual(IMAGE)
    }
  })

  it('refuses paths outside the root with one message, whether or not they exist', async () => {
    const refs = [
      path.join(tmp, 'outside', 'secret.png'), // exists
      path.join(tmp, 'outside', 'missing.png'), // does not
      '/etc/passwd',
      '../outside/secret.png',
      'sub/../../outside/secret.png',
      pathToFileURL('/etc/passwd').href,
      `${root}-sibling/a.png`, // shares the root's prefix, is not inside it
    ]
    for (const ref of refs) {
      const err = await failure(ref, { root })
      expect(err.message).toBe(`image path outside IMAGE_ROOT: ${ref}`)
      expect(err.transient).toBe(false)
    }
  })

  it('does not touch the file system for a path outside the root', async () => {
    // A FIFO outside the root would block a reader forever; refusing must not even stat it.
    const fifo = path.join(tmp, 'outside', 'fifo')
    try {
      execFileSync('mkfifo', [fifo])
    } catch {
      return // no mkfifo here
    }
    const err = await failure(fifo, { root })
    expect(err.message).toMatch(/image path outside IMAGE_ROOT/)
  })

  it('refuses a symlink in the root that leads out of it', async () => {
    const err = await failure(path.join(root, 'escape.png'), { root })
    expect(err.message).toMatch(/image path outside IMAGE_ROOT/)
  })

  it('reports a missing file inside the root as a permanent ENOENT, a directory or FIFO as not a file', async () => {
    const missing = await failure(path.join(root, 'missing.png'), { root })
    expect(missing.message).toMatch(/cannot read image .*missing\.png: ENOENT/)
    expect(missing.transient).toBe(false)
    expect((await failure('sub', { root })).message).toMatch(/is not a file/)
    const fifo = path.join(root, 'fifo')
    try {
      execFileSync('mkfifo', [fifo])
    } catch {
      return
    }
    expect((await failure(fifo, { root })).message).toMatch(/is not a file/) // and no hang
  })

  it('enforces maxBytes on files', async () => {
    const err = await failure('a.png', { root, maxBytes: 4 })
    expect(err.message).toMatch(/bytes \(limit 4\)/)
    expect(err.transient).toBe(false)
  })

  it('takes the root from IMAGE_ROOT, else <ARTIFACTS_DIR>/images; IMAGE_ROOT=none disables local paths', async () => {
    expect(imageSourceDefaults({ ARTIFACTS_DIR: '/srv/iisan' }).root).toBe(path.resolve('/srv/iisan/images'))
    expect(imageSourceDefaults({}).root).toBe(path.resolve('artifacts/images'))
    expect(imageSourceDefaults({ IMAGE_ROOT: root, ARTIFACTS_DIR: '/srv/iisan' }).root).toBe(root)
    expect(imageSourceDefaults({ IMAGE_ROOT: 'none' }).root).toBeNull()

    process.env.IMAGE_ROOT = root
    expect(Buffer.from((await readItemImage({ imageRef: 'a.png' }))!)).toEqual(IMAGE)
    delete process.env.IMAGE_ROOT
    process.env.ARTIFACTS_DIR = path.join(tmp, 'artifacts')
    expect((await failure(path.join(root, 'a.png'))).message).toMatch(/image path outside IMAGE_ROOT/)
    process.env.IMAGE_ROOT = 'none'
    expect((await failure(path.join(root, 'a.png'))).message).toMatch(/local image paths are disabled/)
  })

  it('still prefers an uploaded blob and treats an empty reference as no image', async () => {
    const blob = new Uint8Array([1, 2, 3])
    expect(await readItemImage({ imageBlob: blob, imageRef: '/etc/passwd' }, { root })).toBe(blob)
    expect(await readItemImage({ imageRef: '  ' }, { root })).toBeNull()
  })
})

describe('http(s) URLs', () => {
  it('classifies addresses', () => {
    for (const a of ['127.0.0.1', '10.0.0.8', '172.20.1.1', '192.168.1.1', '169.254.169.254', '100.64.0.1', '0.0.0.0', '::1', '::', 'fe80::1', 'fd12::1', '::ffff:127.0.0.1', '::ffff:7f00:1', '64:ff9b::a00:1', '2002:a00:1::1']) {
      expect(isPrivateAddress(a), a).toBe(true)
    }
    for (const a of ['8.8.8.8', '1.1.1.1', '93.184.216.34', '2606:4700:4700::1111', '::ffff:8.8.8.8']) expect(isPrivateAddress(a), a).toBe(false)
  })

  it('refuses loopback hosts by default, without sending a request', async () => {
    const port = (server.address() as { port: number }).port
    const before = requests.length
    for (const ref of [`${base}/a.png`, `http://localhost:${port}/a.png`, `http://[::1]:${port}/a.png`, `http://2130706433:${port}/a.png`, `https://127.0.0.1:${port}/a.png`]) {
      const err = await failure(ref)
      expect(err.message).toMatch(/private or loopback address \(set IMAGE_ALLOW_PRIVATE_HOSTS=1 to allow\)/)
      expect(err.transient).toBe(false)
    }
    expect(requests.length).toBe(before)
  })

  it('checks every address a host name resolves to', async () => {
    let asked = 0
    const lookup = ((hostname: string, options: unknown, callback: (err: null, addresses: dns.LookupAddress[]) => void) => {
      asked++
      callback(null, [
        { address: '93.184.216.34', family: 4 },
        { address: '10.0.0.7', family: 4 },
      ])
    }) as unknown as typeof dns.lookup
    const err = await failure('http://images.example.test/a.png', { lookup, timeoutMs: 5000 })
    expect(asked).toBeGreaterThan(0)
    expect(err.message).toMatch(/private or loopback address/)
  })

  it('fetches private hosts when allowed (option or IMAGE_ALLOW_PRIVATE_HOSTS=1), following redirects', async () => {
    expect(Buffer.from((await readItemImage({ imageRef: `${base}/a.png` }, { allowPrivateHosts: true }))!)).toEqual(IMAGE)
    process.env.IMAGE_ALLOW_PRIVATE_HOSTS = '1'
    expect(Buffer.from((await readItemImage({ imageRef: `${base}/redirect` }))!)).toEqual(IMAGE)
    const port = (server.address() as { port: number }).port
    expect(Buffer.from((await readItemImage({ imageRef: `http://localhost:${port}/a.png` }))!)).toEqual(IMAGE)
  })

  it('keeps HTTP failures classified: 404 permanent, 503 transient, redirect loops and redirects to file:// refused', async () => {
    const opts = { allowPrivateHosts: true }
    expect(await failure(`${base}/nope.png`, opts)).toMatchObject({ transient: false, message: expect.stringMatching(/HTTP 404/) })
    expect(await failure(`${base}/flaky`, opts)).toMatchObject({ transient: true, message: expect.stringMatching(/HTTP 503/) })
    expect(await failure(`${base}/loop`, opts)).toMatchObject({ transient: false, message: expect.stringMatching(/redirects/) })
    expect(await failure(`${base}/to-file`, opts)).toMatchObject({ transient: false, message: expect.stringMatching(/unsupported scheme/) })
  })

  it('refuses a declared Content-Length over maxBytes', async () => {
    const err = await failure(`${base}/declared-huge`, { allowPrivateHosts: true, maxBytes: 2 ** 20 })
    expect(err).toMatchObject({ transient: false, message: expect.stringMatching(/10485760 bytes \(limit 1048576\)/) })
  })

  it('aborts a streamed (chunked) body once it exceeds maxBytes', async () => {
    const t0 = performance.now()
    const err = await failure(`${base}/endless`, { allowPrivateHosts: true, maxBytes: 256 * 1024, timeoutMs: 30_000 })
    expect(err).toMatchObject({ transient: false, message: expect.stringMatching(/larger than 262144 bytes .*aborted/) })
    expect(performance.now() - t0).toBeLessThan(10_000) // the cap, not the deadline, ended it
    await streamClosed // the server saw the connection go away
  })

  it('gives up on a stalled response after timeoutMs (transient)', async () => {
    const t0 = performance.now()
    const err = await failure(`${base}/stall`, { allowPrivateHosts: true, timeoutMs: 300 })
    expect(err).toMatchObject({ transient: true, message: expect.stringMatching(/timed out after 300 ms/) })
    expect(performance.now() - t0).toBeLessThan(5_000)
  })
})
