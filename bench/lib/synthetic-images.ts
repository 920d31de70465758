// Images for a catalogue that has none (Scientific's items have titles only): deterministic
// synthetic patterns, so that the image backbone runs on real decoded pixels in the benches.
import sharp from 'sharp'

/** Distinct synthetic images; item i shows pattern i mod PATTERNS. */
export const PATTERNS = 64
export const IMAGE_SIDE = 224

const pngs = new Map<number, Promise<Buffer>>()
/** Item `index`'s synthetic image: one of PATTERNS deterministic 224×224 RGB patterns, PNG-encoded once each. */
export function syntheticImage(index: number): Promise<Buffer> {
  const p = index % PATTERNS
  let png = pngs.get(p)
  if (!png) {
    const raw = Buffer.alloc(IMAGE_SIDE * IMAGE_SIDE * 3)
    const fx = 1 + (p % 8)
    const fy = 1 + Math.floor(p / 8)
    for (let y = 0; y < IMAGE_SIDE; y++) {
      for (let x = 0; x < IMAGE_SIDE; x++) {
        const o = (y * IMAGE_SIDE + x) * 3
        raw[o] = (x * fx * 3 + y) & 255
        raw[o + 1] = (y * fy * 3 + p * 29) & 255
        raw[o + 2] = (((x >> 3) ^ (y >> 3)) * (p + 7) * 5) & 255
      }
    }
    png = sharp(raw, { raw: { width: IMAGE_SIDE, height: IMAGE_SIDE, channels: 3 } }).png().toBuffer()
    pngs.set(p, png)
  }
  return png
}

