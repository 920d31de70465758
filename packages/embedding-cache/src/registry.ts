// The backbones this cache process serves: the configured text and image checkpoint folders
// (TEXT_BACKBONE_DIR / IMAGE_BACKBONE_DIR), else the generated demo pair under
// <ARTIFACTS_DIR>/backbones. Each is registered in Postgres by fingerprint (weights hash +
// preprocessing), which is the cache key of its hidden states: replicas configured with the same
// folders share one Backbone row and one set of states.
import path from 'node:path'
import { ensureDefaultBackbones, loadImageBackbone, loadTextBackbone, type ImageBackbone, type TextBackbone } from '@iisan/backbones'
import { loadConfig, type AppConfig } from '@iisan/config'
import { upsertBackbone, type Backbone, type Db, type Modality, type PrismaClient } from '@iisan/storage'

interface LoadedCommon {
  /** Backbone.id */
  id: number
  fingerprint: string
  /** Folder name, e.g. demo-bert or bert-base-uncased. */
  name: string
  dir: string
  /** L (an item has L + 1 states) */
  numLayers: number
  /** d */
  width: number
}

export type LoadedBackbone =
  | (LoadedCommon & { modality: 'text'; modelType: 'bert'; model: TextBackbone })
  | (LoadedCommon & { modality: 'image'; modelType: 'vit'; model: ImageBackbone })

/** The identity of a backbone, without its weights (enough to plan, count and stream). */
export type BackboneRef = Pick<LoadedCommon, 'id' | 'fingerprint' | 'name' | 'numLayers' | 'width'> & { modality: Modality }

export interface BackboneDirs {
  /** null = no text backbone (modality disabled). */
  text: string | null
  image: string | null
}

/** Values that switch a modality off instead of naming a folder. */
const DISABLED = new Set(['none', 'off', 'disabled'])

/**
 * Folders to load. A configured directory wins; `none`/`off` disables the modality; an unset one
 * falls back to the demo pair, generated on first use into `<artifactsDir>/backbones`.
 */
export async function resolveBackboneDirs(config: Pick<AppConfig, 'artifactsDir' | 'textBackboneDir' | 'imageBackboneDir'>): Promise<BackboneDirs> {
  const pick = (v: string | undefined): string | null | undefined => (v === undefined ? undefined : DISABLED.has(v.toLowerCase()) ? null : path.resolve(v))
  const text = pick(config.textBackboneDir)
  const image = pick(config.imageBackboneDir)
  if (text !== undefined && image !== undefined) return { text, image }
  const demo = await ensureDefaultBackbones(path.join(config.artifactsDir, 'backbones'))
  return { text: text === undefined ? demo.text : text, image: image === undefined ? demo.image : image }
}

export class BackboneRegistry {
  private constructor(private readonly loaded: LoadedBackbone[]) {}

  /** Load the configured backbones and register them (upsert by fingerprint). */
  static async load(db: Db, config: Pick<AppConfig, 'artifactsDir' | 'textBackboneDir' | 'imageBackboneDir' | 'backboneRuntime'>): Promise<BackboneRegistry> {
    const dirs = await resolveBackboneDirs(config)
    const loaded: LoadedBackbone[] = []
    const runtime = { runtime: config.backboneRuntime }
    if (dirs.text) {
      const model = await loadTextBackbone(dirs.text, runtime)
      const row = await register(db, 'text', 'bert', dirs.text, model.fingerprint, model.numLayers, model.hiddenSize, {
        model: model.config,
        tokenizer: model.tokenizer.descriptor,
      })
      loaded.push({ ...common(row, dirs.text), modality: 'text', modelType: 'bert', model })
    }
    if (dirs.image) {
      const model = await loadImageBackbone(dirs.image, runtime)
      const row = await register(db, 'image', 'vit', dirs.image, model.fingerprint, model.numLayers, model.hiddenSize, {
        model: model.config,
        preprocessing: model.preprocessing,
      })
      loaded.push({ ...common(row, dirs.image), modality: 'image', modelType: 'vit', model })
    }
    return new BackboneRegistry(loaded)
  }

  /** A registry over already loaded backbones (tests, tools). */
  static of(backbones: LoadedBackbone[]): BackboneRegistry {
    return new BackboneRegistry([...backbones])
  }

  get(modality: Modality): LoadedBackbone | null {
    return this.loaded.find((b) => b.modality === modality) ?? null
  }

  byId(id: number): LoadedBackbone | null {
    return this.loaded.find((b) => b.id === id) ?? null
  }

  list(): LoadedBackbone[] {
    return [...this.loaded]
  }

  dispose(): void {
    for (const b of this.loaded) b.model.dispose()
    this.loaded.length = 0
  }
}

function common(row: Backbone, dir: string): LoadedCommon {
  return { id: row.id, fingerprint: row.fingerprint, name: row.name ?? path.basename(dir), dir, numLayers: row.numLayers, width: row.hiddenSize }
}

async function register(
  db: Db,
  modality: Modality,
  modelType: string,
  dir: string,
  fingerprint: string,
  numLayers: number,
  hiddenSize: number,
  config: object,
): Promise<Backbone> {
  const input = { fingerprint, modality, modelType, name: path.basename(dir), numLayers, hiddenSize, config, location: dir }
  // Replicas starting together race on the insert: the loser's upsert fails on the unique
  // fingerprint and succeeds as an update on the second try.
  const row = await upsertBackbone(db, input).catch(() => upsertBackbone(db, input))
  if (row.modality !== modality || row.numLayers !== numLayers || row.hiddenSize !== hiddenSize) {
    throw new Error(`backbone ${fingerprint} is registered as ${row.modality} L${row.numLayers} d${row.hiddenSize}, but ${dir} loads as ${modality} L${numLayers} d${hiddenSize}`)
  }
  return row
}

let defaultRegistry: Promise<BackboneRegistry> | undefined

/**
 * The process-wide registry built from loadConfig() (environment), loaded on first use. Library
 * functions fall back to it when no registry is passed; the service passes its own.
 */
export function getDefaultRegistry(prisma: PrismaClient): Promise<BackboneRegistry> {
  defaultRegistry ??= BackboneRegistry.load(prisma, loadConfig()).catch((err: unknown) => {
    defaultRegistry = undefined
    throw err
  })
  return defaultRegistry
}
