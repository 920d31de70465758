// The item content the methods that run the backbones read (ItemSource 'item-content'): every
// protocol item's title tokenised by the text backbone's tokenizer, its image decoded and resized
// once (uint8, 150 KB an item at 224²; normalised to float32 only when a batch needs it), and the
// backbones' checkpoints opened for the trainable copies. Shared by the worker and the CLI.
import {
  BertTokenizer,
  Checkpoint,
  DEFAULT_MAX_LENGTH,
  bertTensorSpecs,
  computeFingerprint,
  decodeImage,
  readImagePreprocessConfig,
  readModelConfig,
  resizePillow,
  toPixelValues,
  vitTensorSpecs,
  BackboneConfigError,
  type BertConfig,
  type RgbImage,
  type VitConfig,
} from '@iisan/backbones'
import type { ItemContent } from '@iisan/model/item-content'
import type { BackboneSources } from '@iisan/model/methods/method'
import { readItemImage, type ImageSourceOptions } from '@iisan/embedding-cache/images'
import type { PrismaClient } from '@iisan/storage'
import type { ContentLoader, LoadedContent } from './inputs.ts'

export interface ContentItems {
  /** per model index 0..N (index 0, the padding item, is ignored) */
  titles: string[]
  /** per model index: the image's bytes or path, null where the item has none */
  images?: ((() => Promise<Uint8Array | string | null>) | null)[]
}

export interface ContentBackboneDirs {
  text: string
  /** null: no image backbone configured (every item is text-only) */
  image: string | null
}

export interface ContentProgress {
  done: number
  total: number
}

export async function loadItemContent(items: ContentItems, dirs: ContentBackboneDirs, onImages?: (p: ContentProgress) => void | Promise<void>): Promise<LoadedContent> {
  const textConfig = readModelConfig(dirs.text)
  if (textConfig.modelType !== 'bert') throw new BackboneConfigError(`${dirs.text} holds a ${textConfig.modelType} checkpoint, expected a BERT text encoder`)
  const tokenizer = BertTokenizer.fromDir(dirs.text, DEFAULT_MAX_LENGTH)
  const textSpecs = bertTensorSpecs(textConfig as BertConfig)
  const textCheckpoint = Checkpoint.open(dirs.text, 'bert')
  textCheckpoint.validate(textSpecs)
  const backbones: BackboneSources = { text: { config: textConfig as BertConfig, checkpoint: textCheckpoint }, image: null }
  const fingerprints: LoadedContent['fingerprints'] = { text: computeFingerprint(textConfig, tokenizer.descriptor, textCheckpoint, textSpecs), image: null }

  const batch = tokenizer.encodeBatch(items.titles.map((t, i) => (i === 0 ? '' : t)))
  const resized: (RgbImage | null)[] = items.titles.map(() => null)
  let pixelsOf: (image: RgbImage) => Float32Array = () => new Float32Array(0)
  if (dirs.image) {
    const imageConfig = readModelConfig(dirs.image)
    if (imageConfig.modelType !== 'vit') throw new BackboneConfigError(`${dirs.image} holds a ${imageConfig.modelType} checkpoint, expected a ViT image encoder`)
    const preprocessing = readImagePreprocessConfig(dirs.image, imageConfig as VitConfig)
    const imageSpecs = vitTensorSpecs(imageConfig as VitConfig)
    const imageCheckpoint = Checkpoint.open(dirs.image, 'vit')
    imageCheckpoint.validate(imageSpecs)
    backbones.image = { config: imageConfig as VitConfig, checkpoint: imageCheckpoint }
    fingerprints.image = computeFingerprint(imageConfig, preprocessing, imageCheckpoint, imageSpecs)
    pixelsOf = (image) => toPixelValues(image, preprocessing)
    const withImages = (items.images ?? []).flatMap((read, index) => (read && index > 0 ? [{ read, index }] : []))
    let done = 0
    for (const { read, index } of withImages) {
      const source = await read()
      if (source !== null) resized[index] = resizePillow(await decodeImage(source), preprocessing.width, preprocessing.height, preprocessing.resample)
      done++
      if (done % 100 === 0 || done === withImages.length) await onImages?.({ done, total: withImages.length })
    }
  }
  const content: ItemContent = {
    numItems: items.titles.length - 1,
    text: { inputIds: batch.inputIds, attentionMask: batch.attentionMask, seqLen: batch.seqLen },
    image: (index) => {
      const image = resized[index]
      return image ? pixelsOf(image) : null
    },
  }
  return { content, backbones, fingerprints }
}

/**
 * The worker's `loadContent`: the protocol's items (data.itemKeys are Item.id strings) with their
 * titles and images from the database, through the configured backbones.
 */
export function datasetContentLoader(prisma: PrismaClient, dirs: () => Promise<ContentBackboneDirs>, imageOptions: ImageSourceOptions = {}): ContentLoader {
  return async (datasetId, data, report) => {
    const ids = data.itemKeys.slice(1).map(Number)
    const rows = await prisma.item.findMany({ where: { datasetId, id: { in: ids } }, select: { id: true, title: true, imageRef: true, imageBlob: true } })
    const byId = new Map(rows.map((r) => [r.id, r]))
    const ordered = data.itemKeys.map((key, index) => (index === 0 ? null : (byId.get(Number(key)) ?? null)))
    const hasImage = (r: (typeof rows)[number] | null) => !!r && ((r.imageBlob?.byteLength ?? 0) > 0 || !!r.imageRef)
    return loadItemContent(
      {
        titles: ordered.map((r) => r?.title ?? ''),
        images: ordered.map((r) => (hasImage(r) ? () => readItemImage(r!, imageOptions) : null)),
      },
      await dirs(),
      ({ done, total }) => report({ phase: 'caching', cached: done, total, message: 'preparing item images', fraction: 0 }),
    )
  }
}
