// Where downloaded checkpoints live and how a TEXT_BACKBONE / IMAGE_BACKBONE value becomes a
// folder. Light on purpose (no network client, no tensors): the config loader of every service
// imports it.
//
// Layout: <BACKBONE_CACHE_DIR>/<org>--<name>/<revision>/ holds the files exactly as a
// `huggingface-cli download --local-dir` folder would (config.json, weights, tokenizer), plus
// .iisan-download.json, written last, which records the commit and the verified files. A folder
// without it is an unfinished download (its .incomplete files are resumed by the next run).
// Unlike the hub's own cache there are no blob symlinks: the folder is an ordinary checkpoint
// folder that can be copied elsewhere or pointed at directly.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'

export const DEFAULT_HF_ENDPOINT = 'https://huggingface.co'
export const DEFAULT_REVISION = 'main'
export const DOWNLOAD_MANIFEST = '.iisan-download.json'

/** Values that switch a modality off instead of naming a backbone (also valid-looking hub ids). */
export const BACKBONE_DISABLED_VALUES: readonly string[] = ['none', 'off', 'disabled']

type Env = Record<string, string | undefined>

const expandHome = (p: string): string => (p === '~' || p.startsWith('~/') ? path.join(os.homedir(), p.slice(1)) : p)

/** HF_ENDPOINT, as transformers and huggingface_hub read it (a mirror or a local test server). */
export function hubEndpoint(env: Env = process.env): string {
  return (env.HF_ENDPOINT?.trim() || DEFAULT_HF_ENDPOINT).replace(/\/+$/, '')
}

/** HF_TOKEN (or the older HUGGING_FACE_HUB_TOKEN): needed for gated or private models only. */
export function hubToken(env: Env = process.env): string | undefined {
  return env.HF_TOKEN?.trim() || env.HUGGING_FACE_HUB_TOKEN?.trim() || undefined
}

/** BACKBONE_CACHE_DIR, else $XDG_CACHE_HOME/iisan/backbones, else ~/.cache/iisan/backbones. */
export function defaultBackboneCacheDir(env: Env = process.env): string {
  const configured = env.BACKBONE_CACHE_DIR?.trim()
  if (configured) return path.resolve(expandHome(configured))
  const xdg = env.XDG_CACHE_HOME?.trim()
  return path.join(xdg ? path.resolve(expandHome(xdg)) : path.join(os.homedir(), '.cache'), 'iisan', 'backbones')
}

export interface HubRef {
  /** `name` or `org/name`, as on the hub */
  repo: string
  /** branch, tag or commit; `main` unless given as `repo@revision` */
  revision: string
}

// The hub's own rules for names: letters, digits, `._-`, no `--` or `..`, at most 96 characters.
const NAME = /^(?!.*--)(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9._-]{0,95}$/
const REVISION = /^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$/

/** `bert-base-uncased`, `google/vit-base-patch16-224`, `org/name@v1.0` → a HubRef; null when it cannot be one. */
export function parseHubId(spec: string): HubRef | null {
  const at = spec.indexOf('@')
  const repo = at >= 0 ? spec.slice(0, at) : spec
  const revision = at >= 0 ? spec.slice(at + 1) : DEFAULT_REVISION
  const parts = repo.split('/')
  if (parts.length > 2 || !parts.every((p) => NAME.test(p))) return null
  if (!REVISION.test(revision) || revision.includes('..') || revision.includes('--')) return null
  return { repo, revision }
}

export function formatHubRef(ref: HubRef): string {
  return ref.revision === DEFAULT_REVISION ? ref.repo : `${ref.repo}@${ref.revision}`
}

/** The folder a hub model is (or would be) downloaded to. */
export function snapshotDir(ref: HubRef, cacheDir: string = defaultBackboneCacheDir()): string {
  return path.join(cacheDir, ref.repo.replace('/', '--'), ref.revision.replaceAll('/', '--'))
}

/** The hub model a folder of the cache belongs to (the inverse of snapshotDir), or null. */
export function hubRefOfDir(dir: string, cacheDir: string = defaultBackboneCacheDir()): HubRef | null {
  const rel = path.relative(cacheDir, path.resolve(dir))
  const parts = rel.split(path.sep)
  if (parts.length !== 2 || parts.some((p) => !p || p === '..')) return null
  const ref = { repo: parts[0].replace('--', '/'), revision: parts[1].replaceAll('--', '/') }
  return parseHubId(`${ref.repo}@${ref.revision}`) ? ref : null
}

export function isDownloaded(dir: string): boolean {
  return fs.existsSync(path.join(dir, DOWNLOAD_MANIFEST))
}

export function downloadCommand(ref: HubRef): string {
  return `npm run backbone -- download ${formatHubRef(ref)}`
}

export function notDownloadedMessage(ref: HubRef, dir: string): string {
  const partial = fs.existsSync(dir)
  return (
    `backbone ${formatHubRef(ref)} is ${partial ? 'not completely' : 'not'} downloaded (expected in ${dir}): ` +
    `run \`${downloadCommand(ref)}\`${partial ? ' to finish it' : ''} (set the same BACKBONE_CACHE_DIR for the command and the service), ` +
    `or give a checkpoint folder instead. Services never download by themselves.`
  )
}

export type ResolvedBackbone =
  | { kind: 'disabled' }
  | { kind: 'folder'; dir: string }
  | { kind: 'hub'; ref: HubRef; dir: string; downloaded: boolean }

/**
 * What a backbone setting names, the way transformers' from_pretrained decides: an existing
 * folder wins; otherwise anything shaped like a hub id (`name`, `org/name`, `org/name@rev`) is
 * the hub model's folder in the cache; anything else is a folder (that does not exist yet: the
 * loader says so). Paths starting with `/`, `.` or `~` are always folders.
 */
export function resolveBackboneSpec(spec: string, options: { cacheDir?: string; cwd?: string } = {}): ResolvedBackbone {
  const value = spec.trim()
  if (BACKBONE_DISABLED_VALUES.includes(value.toLowerCase())) return { kind: 'disabled' }
  const local = path.resolve(options.cwd ?? process.cwd(), expandHome(value))
  const pathLike = /^[/.~]/.test(value) || value.includes('\\')
  const ref = pathLike ? null : parseHubId(value)
  if (!ref || fs.existsSync(local)) return { kind: 'folder', dir: local }
  const dir = snapshotDir(ref, options.cacheDir ?? defaultBackboneCacheDir())
  return { kind: 'hub', ref, dir, downloaded: isDownloaded(dir) }
}
