import { createHash } from 'node:crypto'

export interface ContentHashes {
  /** sha256 hex of the UTF-8 title — cache key of text backbones. */
  textHash: string
  /** sha256 hex of the image bytes, or of the reference string when only a reference is known. */
  imageHash: string | null
  /** sha256 hex over title and image: sha256("text:" + textHash + "\n" + "image:" + (imageHash ?? "")) */
  contentHash: string
}

/** sha256, hex: content hashes here, Prisma's migration checksums in migrate.ts. */
export const sha256 = (data: string | Uint8Array): string => createHash('sha256').update(data).digest('hex')

/** The hashes stored on Item. Uploaded bytes take precedence over a reference. */
export function computeContentHashes(item: {
  title: string
  imageRef?: string | null
  imageBlob?: Uint8Array | null
}): ContentHashes {
  const textHash = sha256(item.title)
  const imageHash = item.imageBlob ? sha256(item.imageBlob) : item.imageRef ? sha256(`ref:${item.imageRef}`) : null
  const contentHash = sha256(`text:${textHash}\nimage:${imageHash ?? ''}`)
  return { textHash, imageHash, contentHash }
}
