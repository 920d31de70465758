// `npm run backbone -- download <hub id>` against a local static server laid out as the hub serves
// files (there is no internet here; helpers/fake-hub.ts), serving the tiny reference checkpoints.
// HF_ENDPOINT points the client at it, as it would transformers.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { spawn } from 'node:child_process'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { fingerprintBackbone, loadImageBackbone, loadTextBackbone } from '@iisan/backbones'
import { BackboneDownloadError, downloadBackbone, type DownloadEvent } from '@iisan/backbones/hub'
import { DOWNLOAD_MANIFEST, resolveBackboneSpec, snapshotDir } from '@iisan/backbones/hub-cache'
import { loadConfig } from '@iisan/config'
import { parseSafetensors, serializeSafetensors, type TensorToWrite } from '@iisan/safetensors'
import { CACHE_ENTRY } from './helpers/platform.ts'
import { REPO_ROOT } from './helpers/db.ts'
import { fixtureDir } from './fixtures-gen/backbone-fixtures.ts'
import { FakeHub, sha256 } from './helpers/fake-hub.ts'

const fixture = (name: string, files: string[]): Record<string, Buffer> =>
  Object.fromEntries(files.map((f) => [f, fs.readFileSync(path.join(fixtureDir(name), f))]))

/** bert-tiny-a's weights split into two shards with an index, as save_pretrained(max_shard_size=…) writes them. */
function sharded(): Record<string, Buffer> {
  const whole = parseSafetensors(fs.readFileSync(path.join(fixtureDir('bert-tiny-a'), 'model.safetensors')))
  const names = [...whole.tensors.keys()].sort()
  const shards: Record<string, TensorToWrite>[] = [{}, {}]
  const weightMap: Record<string, string> = {}
  names.forEach((name, i) => {
    const t = whole.tensors.get(name)!
    if (t.dtype !== 'F32') throw new Error(`fixture tensor ${name} is ${t.dtype}`)
    const part = i < names.length / 2 ? 0 : 1
    shards[part][name] = { dtype: 'F32', shape: t.shape, data: new Float32Array(new Uint8Array(t.bytes).buffer) }
    weightMap[name] = `model-0000${part + 1}-of-00002.safetensors`
  })
  return {
    ...fixture('bert-tiny-a', ['config.json', 'vocab.txt', 'tokenizer_config.json']),
    'model.safetensors.index.json': Buffer.from(JSON.stringify({ metadata: { total_size: 0 }, weight_map: weightMap })),
    'model-00001-of-00002.safetensors': Buffer.from(serializeSafetensors(shards[0], { format: 'pt' })),
    'model-00002-of-00002.safetensors': Buffer.from(serializeSafetensors(shards[1], { format: 'pt' })),
  }
}

const hub = new FakeHub()
let cacheDir: string
const roots: string[] = []
const freshCache = () => {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'iisan-hub-cache-'))
  roots.push(d)
  return d
}

beforeAll(async () => {
  // what a hub repository holds beyond a backbone's files is left alone (README, reference outputs)
  hub.add('test-org/bert-tiny-a', fixture('bert-tiny-a', ['config.json', 'model.safetensors', 'vocab.txt', 'tokenizer_config.json', 'README.md', 'expected.json']))
  hub.add('vit-tiny-a', fixture('vit-tiny-a', ['config.json', 'model.safetensors', 'README.md']))
  hub.add('test-org/bert-tiny-sharded', sharded())
  hub.add('test-org/only-pytorch', { 'config.json': fs.readFileSync(path.join(fixtureDir('bert-tiny-a'), 'config.json')), 'pytorch_model.bin': Buffer.from('not read') })
  await hub.start()
  cacheDir = freshCache()
})

afterAll(async () => {
  await hub.stop()
  for (const d of roots) fs.rmSync(d, { recursive: true, force: true })
})

/** The CLI as a user runs it (npm run backbone -- …), against the fake hub. */
function cli(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'packages/backbones/src/cli.ts', ...args], {
      cwd: REPO_ROOT,
      env: { ...process.env, HF_ENDPOINT: hub.url, BACKBONE_CACHE_DIR: cacheDir, HF_TOKEN: '', ...env },
    })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
    child.on('close', (code) => resolve({ code, stdout, stderr }))
  })
}

describe('backbone download', () => {
  it('fetches config, weights and tokenizer into the cache, verified, and the folder loads as a backbone', async () => {
    const events: DownloadEvent[] = []
    const result = await downloadBackbone('test-org/bert-tiny-a', { endpoint: hub.url, cacheDir, onProgress: (e) => events.push(e) })
    const dir = path.join(cacheDir, 'test-org--bert-tiny-a', 'main')
    expect(result.dir).toBe(dir)
    expect(result.commit).toBe(hub.repos.get('test-org/bert-tiny-a')!.sha)
    expect(fs.readdirSync(dir).sort()).toEqual([DOWNLOAD_MANIFEST, 'config.json', 'model.safetensors', 'tokenizer_config.json', 'vocab.txt'])
    const weights = fs.readFileSync(path.join(fixtureDir('bert-tiny-a'), 'model.safetensors'))
    expect(result.files.find((f) => f.path === 'model.safetensors')).toEqual({ path: 'model.safetensors', size: weights.length, sha256: sha256(weights) })
    expect(result.transferred).toBeGreaterThan(weights.length)
    expect(events.filter((e) => e.type === 'verified').map((e) => (e as { path: string }).path)).toEqual(['config.json', 'model.safetensors', 'vocab.txt', 'tokenizer_config.json'])
    const text = await loadTextBackbone(dir)
    expect(text.fingerprint).toBe(fingerprintBackbone(fixtureDir('bert-tiny-a')))
    text.dispose()

    // again: nothing is transferred, nothing re-read from the server
    const before = hub.requests.length
    const again = await downloadBackbone('test-org/bert-tiny-a', { endpoint: hub.url, cacheDir })
    expect(again.transferred).toBe(0)
    expect(hub.requests.slice(before).filter((r) => r.url.includes('/resolve/'))).toEqual([])
  })

  it('TEXT_BACKBONE / IMAGE_BACKBONE take a hub id (resolved to the cache) or a folder; the _DIR names stay aliases', async () => {
    const env = { BACKBONE_CACHE_DIR: cacheDir }
    expect(loadConfig({ ...env, TEXT_BACKBONE: 'test-org/bert-tiny-a' })).toMatchObject({ textBackbone: 'test-org/bert-tiny-a', textBackboneDir: path.join(cacheDir, 'test-org--bert-tiny-a', 'main') })
    expect(loadConfig({ ...env, TEXT_BACKBONE_DIR: 'test-org/bert-tiny-a' }).textBackboneDir).toBe(path.join(cacheDir, 'test-org--bert-tiny-a', 'main'))
    expect(loadConfig({ ...env, IMAGE_BACKBONE: fixtureDir('vit-tiny-a') }).imageBackboneDir).toBe(fixtureDir('vit-tiny-a'))
    expect(loadConfig({ ...env, IMAGE_BACKBONE: 'none' }).imageBackboneDir).toBe('none')
    expect(loadConfig({ ...env, TEXT_BACKBONE: 'org/name@v1.0' }).textBackboneDir).toBe(path.join(cacheDir, 'org--name', 'v1.0'))
    expect(() => loadConfig({ ...env, TEXT_BACKBONE: 'bert-base-uncased', TEXT_BACKBONE_DIR: '/models/other' })).toThrow(/TEXT_BACKBONE_DIR.*contradicts TEXT_BACKBONE=bert-base-uncased/)
    // an existing folder wins over a hub id of the same spelling, as in transformers
    const cwd = freshCache()
    fs.mkdirSync(path.join(cwd, 'models', 'bert'), { recursive: true })
    expect(resolveBackboneSpec('models/bert', { cwd, cacheDir })).toEqual({ kind: 'folder', dir: path.join(cwd, 'models', 'bert') })
    expect(resolveBackboneSpec('models/other', { cwd, cacheDir })).toMatchObject({ kind: 'hub', ref: { repo: 'models/other', revision: 'main' }, downloaded: false })
  })

  it('a hub id that is not downloaded is a clear error naming the command, at load and at the embedding cache start', async () => {
    const dir = snapshotDir({ repo: 'test-org/never-fetched', revision: 'main' }, cacheDir)
    const prior = process.env.BACKBONE_CACHE_DIR
    process.env.BACKBONE_CACHE_DIR = cacheDir
    try {
      await expect(loadTextBackbone(dir)).rejects.toThrow(/test-org\/never-fetched is not downloaded .*`npm run backbone -- download test-org\/never-fetched`/)
    } finally {
      if (prior === undefined) delete process.env.BACKBONE_CACHE_DIR
      else process.env.BACKBONE_CACHE_DIR = prior
    }
    const artifacts = freshCache()
    const child = spawn(process.execPath, ['--import', 'tsx', CACHE_ENTRY], {
      cwd: REPO_ROOT,
      env: { ...process.env, BACKBONE_CACHE_DIR: cacheDir, TEXT_BACKBONE: 'test-org/never-fetched', IMAGE_BACKBONE: 'none', ARTIFACTS_DIR: artifacts, INTERNAL_TOKEN: '', EMBEDDING_CACHE_HOST: '127.0.0.1' },
    })
    let stderr = ''
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve))
    expect(code).toBe(1)
    expect(stderr).toContain('backbone test-org/never-fetched is not downloaded')
    expect(stderr).toContain('npm run backbone -- download test-org/never-fetched')
    expect(stderr).not.toMatch(/\n\s+at /) // a message, not a stack trace
  }, 60_000)

  it('the CLI downloads a hub id without an organisation, prints the folder, and IMAGE_BACKBONE finds it', async () => {
    const { code, stdout, stderr } = await cli(['download', 'vit-tiny-a'])
    expect(stderr).toContain('model.safetensors')
    expect(code, stderr).toBe(0)
    const dir = path.join(cacheDir, 'vit-tiny-a', 'main')
    expect(stdout.trim()).toBe(dir)
    expect(stderr).toContain('IMAGE_BACKBONE=vit-tiny-a')
    const config = loadConfig({ BACKBONE_CACHE_DIR: cacheDir, IMAGE_BACKBONE: 'vit-tiny-a' })
    expect(config.imageBackboneDir).toBe(dir)
    const image = await loadImageBackbone(config.imageBackboneDir!)
    expect(image.fingerprint).toBe(fingerprintBackbone(fixtureDir('vit-tiny-a')))
    image.dispose()
    // --model takes the hub id too, once downloaded
    const fp = await cli(['fingerprint', '--model', 'vit-tiny-a'])
    expect(fp.stdout.trim()).toBe(image.fingerprint)
  }, 60_000)

  it('resumes a transfer cut off midway with a Range request and ends with the right hash', async () => {
    const dir = freshCache()
    const weights = hub.repos.get('test-org/bert-tiny-a')!.files.get('model.safetensors')!
    const cut = 3_000_000
    hub.dropAfter.set('model.safetensors', cut)
    const before = hub.requests.length
    const events: DownloadEvent[] = []
    const result = await downloadBackbone('test-org/bert-tiny-a', { endpoint: hub.url, cacheDir: dir, retryDelayMs: 10, onProgress: (e) => events.push(e) })
    const retry = events.find((e) => e.type === 'retry') as Extract<DownloadEvent, { type: 'retry' }>
    expect(retry).toMatchObject({ path: 'model.safetensors', attempt: 1 })
    expect(retry.offset).toBeGreaterThan(0)
    expect(retry.offset).toBeLessThanOrEqual(cut)
    const gets = hub.requests.slice(before).filter((r) => r.url.endsWith('/model.safetensors') && r.range !== 'bytes=0-0')
    expect(gets.map((r) => r.range)).toEqual([undefined, `bytes=${retry.offset}-`])
    expect(sha256(fs.readFileSync(path.join(result.dir, 'model.safetensors')))).toBe(sha256(weights))
    expect(fs.readdirSync(result.dir).filter((f) => f.endsWith('.incomplete'))).toEqual([])
  })

  it('resumes in a later run what an earlier run left unfinished', async () => {
    const dir = freshCache()
    hub.dropAfter.set('model.safetensors', 2_000_000)
    const failed = downloadBackbone('test-org/bert-tiny-a', { endpoint: hub.url, cacheDir: dir, retries: 0 })
    await expect(failed).rejects.toThrow(/model\.safetensors: download broken off at \d+ of \d+ bytes .*run the command again to resume/)
    const snapshot = path.join(dir, 'test-org--bert-tiny-a', 'main')
    const partial = fs.statSync(path.join(snapshot, 'model.safetensors.incomplete')).size
    expect(partial).toBeGreaterThan(0)
    expect(fs.existsSync(path.join(snapshot, DOWNLOAD_MANIFEST))).toBe(false)
    const prior = process.env.BACKBONE_CACHE_DIR
    process.env.BACKBONE_CACHE_DIR = dir
    try {
      await expect(loadTextBackbone(snapshot)).rejects.toThrow(/is not completely downloaded.*to finish it/)
    } finally {
      if (prior === undefined) delete process.env.BACKBONE_CACHE_DIR
      else process.env.BACKBONE_CACHE_DIR = prior
    }
    const before = hub.requests.length
    const result = await downloadBackbone('test-org/bert-tiny-a', { endpoint: hub.url, cacheDir: dir })
    expect(hub.requests.slice(before).filter((r) => r.url.endsWith('/model.safetensors') && r.range !== 'bytes=0-0').map((r) => r.range)).toEqual([`bytes=${partial}-`])
    expect(result.transferred).toBeLessThan(fs.statSync(path.join(snapshot, 'model.safetensors')).size)
    const text = await loadTextBackbone(result.dir)
    expect(text.fingerprint).toBe(fingerprintBackbone(fixtureDir('bert-tiny-a')))
    text.dispose()
  })

  it('refuses a file whose sha256 is not the hub’s, and keeps nothing of it', async () => {
    const dir = freshCache()
    hub.corrupt.add('model.safetensors')
    try {
      await expect(downloadBackbone('test-org/bert-tiny-a', { endpoint: hub.url, cacheDir: dir })).rejects.toThrow(
        /model\.safetensors: the downloaded file does not match the hub's listing \(sha256 [0-9a-f]{64} instead of [0-9a-f]{64}\).*run the command again/,
      )
    } finally {
      hub.corrupt.delete('model.safetensors')
    }
    const snapshot = path.join(dir, 'test-org--bert-tiny-a', 'main')
    expect(fs.readdirSync(snapshot).sort()).toEqual(['config.json'])
  })

  it('downloads sharded weights with their index', async () => {
    const result = await downloadBackbone('test-org/bert-tiny-sharded', { endpoint: hub.url, cacheDir })
    expect(result.files.map((f) => f.path)).toEqual(['config.json', 'model.safetensors.index.json', 'model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors', 'vocab.txt', 'tokenizer_config.json'])
    // the same tensors, however they are split: the same fingerprint
    expect(fingerprintBackbone(result.dir)).toBe(fingerprintBackbone(fixtureDir('bert-tiny-a')))
  })

  it('says what is wrong with a repository it cannot use, with exit code 1', async () => {
    const unknown = await cli(['download', 'test-org/no-such-model'])
    expect(unknown.code).toBe(1)
    expect(unknown.stderr).toMatch(/^backbone: test-org\/no-such-model: repository not found on http:\/\/127\.0\.0\.1:\d+ \(HTTP 404\)/m)
    const revision = await cli(['download', 'test-org/bert-tiny-a', '--revision', 'v9'])
    expect(revision.code).toBe(1)
    expect(revision.stderr).toContain('(or its revision v9) not found')
    const pytorch = await cli(['download', 'test-org/only-pytorch'])
    expect(pytorch.code).toBe(1)
    expect(pytorch.stderr).toContain('has no safetensors weights (model.safetensors or model.safetensors.index.json), only pytorch_model.bin')
    const down = await cli(['download', 'bert-base-uncased'], { HF_ENDPOINT: 'http://127.0.0.1:9' })
    expect(down.code).toBe(1)
    expect(down.stderr).toContain('cannot reach http://127.0.0.1:9')
    await expect(downloadBackbone('../escape', { endpoint: hub.url, cacheDir })).rejects.toBeInstanceOf(BackboneDownloadError)
  }, 60_000)
})
