// How the platform tells the demo backbones from real ones, and what it tells the user. The one
// marker is `"iisan_demo": true` in the folder's config.json, written by the generator
// (default.ts). It is parsed into ModelConfig.demo, so it travels with everything built from the
// parsed config: the fingerprint, the Backbone row the embedding cache registers
// (`config.model.demo`), and from there a training job's warning and its model version's
// `demoBackbones`. No list of demo fingerprints to keep up to date, and a copied or renamed demo
// folder is still recognised. Light on purpose (no tensors): the API and the worker import it.
import fs from 'node:fs'
import path from 'node:path'
import { BACKBONE_DISABLED_VALUES } from './hub-cache.ts'

/** The config.json key of the marker. transformers keeps unknown keys as config attributes. */
export const DEMO_CONFIG_KEY = 'iisan_demo'

/** The real checkpoints the demo pair stands in for (what the messages suggest downloading). */
export const REAL_BACKBONES = { text: 'bert-base-uncased', image: 'google/vit-base-patch16-224' } as const

export type BackboneModality = keyof typeof REAL_BACKBONES

/** A parsed ModelConfig (or anything shaped like one) that carries the marker. */
export function isDemoModelConfig(config: unknown): boolean {
  return (config as { demo?: unknown } | null | undefined)?.demo === true
}

/** A folder whose config.json carries the marker; false when it is not readable (not ours to judge). */
export function isDemoBackboneDir(dir: string): boolean {
  try {
    const raw = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8')) as Record<string, unknown>
    return raw[DEMO_CONFIG_KEY] === true
  } catch {
    return false
  }
}

const ORDER: BackboneModality[] = ['text', 'image']

/**
 * The modalities whose configured backbone (AppConfig's resolved folders) is the demo pair: unset
 * means the demo pair, the embedding cache's default. For processes that do not load backbones
 * themselves (the worker) — it reflects their environment, which deployments share with the cache.
 */
export function configuredDemoBackbones(config: { textBackboneDir?: string; imageBackboneDir?: string }): BackboneModality[] {
  const demo = (dir: string | undefined): boolean =>
    dir === undefined || (!BACKBONE_DISABLED_VALUES.includes(dir.trim().toLowerCase()) && isDemoBackboneDir(dir))
  return ORDER.filter((m) => demo(m === 'text' ? config.textBackboneDir : config.imageBackboneDir))
}

/**
 * The one message wherever demo backbones are in use (training job, model version, service logs):
 * what it means and the commands that fix it.
 */
export function demoBackboneWarning(modalities: readonly string[]): string {
  const which = ORDER.filter((m) => modalities.includes(m))
  if (which.length === 0) return ''
  const names = which.map((m) => (m === 'text' ? 'text (BERT)' : 'image (ViT)')).join(' and ')
  const downloads = which.map((m) => `npm run backbone -- download ${REAL_BACKBONES[m]}`).join(' and ')
  const env = which.map((m) => `${m === 'text' ? 'TEXT' : 'IMAGE'}_BACKBONE=${REAL_BACKBONES[m]}`).join(' ')
  return (
    `The demo ${names} backbone${which.length > 1 ? 's are' : ' is'} in use: small, with random weights, not pretrained. ` +
    `IISAN's features from ${which.length > 1 ? 'them' : 'it'} carry no knowledge of the items, so its recommendations are not meaningful ` +
    `(ID-SASRec may well score higher) — recommendation quality needs real checkpoints. ` +
    `Get them with \`${downloads}\`, then set ${env} for the embedding cache and train again.`
  )
}
