// Image decoding and PIL-exact resizing, independent of any model.
import { describe, expect, it } from 'vitest'
import sharp from 'sharp'
import { decodeImage, ImageInputError, resizePillow, toPixelValues, type RgbImage } from '@iisan/backbones'
import { fixturePng, readExpected, type VitExpected } from './fixtures-gen/backbone-fixtures.ts'

const raw = (exp: VitExpected, i: number): RgbImage => {
  const [height, width] = exp.image_sizes_hw[i]
  return { width, height, data: Uint8Array.from(exp.images_u8_hwc[i].flat(2)) }
}

describe('resizePillow', () => {
  it.each(['vit-tiny-a', 'vit-tiny-b', 'vit-tiny-sharp'])('matches PIL BILINEAR bit-exactly on %s (down, up, mixed, identity)', (name) => {
    const exp = readExpected<VitExpected>(name)
    const size = exp.resized_u8_hwc[0].length
    exp.images_u8_hwc.forEach((_, i) => {
      const out = resizePillow(raw(exp, i), size, size, 'bilinear')
      expect([out.width, out.height]).toEqual([size, size])
      expect(Array.from(out.data)).toEqual(exp.resized_u8_hwc[i].flat(2))
    })
  })

  it('keeps constant images constant and stays in range for every filter', () => {
    const img: RgbImage = { width: 37, height: 23, data: new Uint8Array(37 * 23 * 3).fill(200) }
    for (const f of ['bilinear', 'bicubic', 'lanczos', 'box', 'hamming'] as const) {
      for (const [w, h] of [
        [8, 8],
        [64, 50],
        [37, 10],
      ]) {
        expect(new Set(resizePillow(img, w, h, f).data)).toEqual(new Set([200]))
      }
    }
  })

  it('normalises like ViTImageProcessor: x/255 in float32, then (x - 0.5) / 0.5', () => {
    const img: RgbImage = { width: 2, height: 1, data: Uint8Array.from([0, 128, 255, 1, 2, 3]) }
    const pv = toPixelValues(img, { rescaleFactor: 1 / 255, imageMean: [0.5, 0.5, 0.5], imageStd: [0.5, 0.5, 0.5], doNormalize: true })
    // CHW: channel 0 = [0, 1], channel 1 = [128, 2], channel 2 = [255, 3]
    const f = Math.fround
    const expected = [0, 1, 128, 2, 255, 3].map((v) => f(f(f(v / 255) - 0.5) / 0.5))
    expect(Array.from(pv)).toEqual(expected)
    expect(pv[0]).toBe(-1)
    expect(pv[4]).toBe(1)
  })
})

describe('decodeImage', () => {
  const exp = readExpected<VitExpected>('vit-tiny-b')
  const img = raw(exp, 1)

  it('PNG and lossless WebP decode to the exact pixels; JPEG closely', async () => {
    const png = await fixturePng(exp, 1)
    expect(Array.from((await decodeImage(png)).data)).toEqual(Array.from(img.data))
    const source = sharp(Buffer.from(img.data), { raw: { width: img.width, height: img.height, channels: 3 } })
    const webp = await source.clone().webp({ lossless: true }).toBuffer()
    expect(Array.from((await decodeImage(webp)).data)).toEqual(Array.from(img.data))
    const jpeg = await decodeImage(await source.clone().jpeg({ quality: 100, chromaSubsampling: '4:4:4' }).toBuffer())
    expect([jpeg.width, jpeg.height]).toEqual([img.width, img.height])
    let sum = 0
    jpeg.data.forEach((v, i) => (sum += Math.abs(v - img.data[i])))
    expect(sum / jpeg.data.length).toBeLessThan(3)
  })

  it('greyscale becomes 3 equal channels; transparency is composited on white', async () => {
    const grey = await sharp(Buffer.from([0, 100, 200, 255]), { raw: { width: 2, height: 2, channels: 1 } }).png().toBuffer()
    expect(Array.from((await decodeImage(grey)).data)).toEqual([0, 0, 0, 100, 100, 100, 200, 200, 200, 255, 255, 255])
    const rgba = await sharp(Buffer.from([10, 20, 30, 255, 10, 20, 30, 0]), { raw: { width: 2, height: 1, channels: 4 } })
      .png()
      .toBuffer()
    expect(Array.from((await decodeImage(rgba)).data)).toEqual([10, 20, 30, 255, 255, 255])
  })

  it('rejects corrupt, empty and missing inputs with ImageInputError', async () => {
    const png = await fixturePng(exp, 0)
    await expect(decodeImage(png.subarray(0, 40))).rejects.toBeInstanceOf(ImageInputError)
    await expect(decodeImage(Buffer.alloc(0))).rejects.toThrow(/cannot decode image <0-byte buffer>/)
    await expect(decodeImage('/nonexistent.png')).rejects.toThrow('cannot read image /nonexistent.png: ENOENT')
  })
})
