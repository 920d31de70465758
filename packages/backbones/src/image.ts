// Image preprocessing as HF's ViTImageProcessor does it: decode → RGB → PIL `resize` → ×1/255 →
// (x − mean) / std → CHW float32.
//
// Decoding uses sharp (libvips). Resizing does not: libvips' reduce kernels round and place
// samples differently from Pillow, and the cached hidden states must match what the PyTorch
// pipeline would produce. So Pillow's ImagingResample (src/libImaging/Resample.c) is ported
// below: separable filter, support scaled by in/out when downscaling (antialias), coefficients
// in 22-bit fixed point, horizontal pass first, uint8 rounding after each pass.
import fs from 'node:fs/promises'
import sharp from 'sharp'
import type { ImagePreprocessConfig, ResampleFilter } from './config.ts'

/** Decoded image, row-major HWC, 3 channels (RGB), uint8. */
export interface RgbImage {
  width: number
  height: number
  data: Uint8Array
}

export class ImageInputError extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'ImageInputError'
  }
}

export type ImageInput = string | Uint8Array

export function describeInput(input: ImageInput): string {
  return typeof input === 'string' ? input : `<${input.byteLength}-byte buffer>`
}

/**
 * Any format sharp decodes (JPEG, PNG, WebP, GIF first frame, TIFF, AVIF…). Transparent pixels
 * are composited on white, as transformers' convert_to_rgb does; EXIF orientation is not applied
 * (PIL does not apply it either).
 */
export async function decodeImage(input: ImageInput): Promise<RgbImage> {
  let bytes: Uint8Array
  if (typeof input === 'string') {
    try {
      bytes = await fs.readFile(input)
    } catch (err) {
      throw new ImageInputError(`cannot read image ${input}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`)
    }
  } else {
    bytes = input
  }
  try {
    const { data, info } = await sharp(bytes, { failOn: 'error' })
      .flatten({ background: { r: 255, g: 255, b: 255 } })
      .toColourspace('srgb')
      .raw({ depth: 'uchar' })
      .toBuffer({ resolveWithObject: true })
    if (info.channels !== 3 || data.length !== info.width * info.height * 3) {
      throw new Error(`decoded to ${info.channels} channels, expected RGB`)
    }
    return { width: info.width, height: info.height, data: new Uint8Array(data.buffer, data.byteOffset, data.length) }
  } catch (err) {
    throw new ImageInputError(`cannot decode image ${describeInput(input)}: ${(err as Error).message}`)
  }
}

// ---- Pillow resample -------------------------------------------------------------------------

interface Filter {
  support: number
  weight(x: number): number
}

function sinc(x: number): number {
  if (x === 0) return 1
  x *= Math.PI
  return Math.sin(x) / x
}

const FILTERS: Record<ResampleFilter, Filter> = {
  box: { support: 0.5, weight: (x) => (x > -0.5 && x <= 0.5 ? 1 : 0) },
  bilinear: {
    support: 1,
    weight: (x) => {
      x = Math.abs(x)
      return x < 1 ? 1 - x : 0
    },
  },
  hamming: {
    support: 1,
    weight: (x) => {
      x = Math.abs(x)
      if (x === 0) return 1
      if (x >= 1) return 0
      x *= Math.PI
      // Pillow writes these constants as C floats (0.54f, 0.46f).
      return (Math.sin(x) / x) * (Math.fround(0.54) + Math.fround(0.46) * Math.cos(x))
    },
  },
  bicubic: {
    support: 2,
    weight: (x) => {
      const a = -0.5
      x = Math.abs(x)
      if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1
      if (x < 2) return (((x - 5) * x + 8) * x - 4) * a
      return 0
    },
  },
  lanczos: { support: 3, weight: (x) => (x >= -3 && x < 3 ? sinc(x) * sinc(x / 3) : 0) },
}

const PRECISION_BITS = 32 - 8 - 2

interface Coefficients {
  ksize: number
  /** Per output pixel: first input index and number of taps. */
  bounds: Int32Array
  /** Fixed-point weights, ksize per output pixel. */
  weights: Int32Array
}

/** precompute_coeffs + normalize_coeffs_8bpc for the box [0, inSize). */
function coefficients(inSize: number, outSize: number, filter: Filter): Coefficients {
  const scale = inSize / outSize
  const filterScale = Math.max(scale, 1)
  const support = filter.support * filterScale
  const ksize = Math.ceil(support) * 2 + 1
  const bounds = new Int32Array(outSize * 2)
  const weights = new Int32Array(outSize * ksize)
  const k = new Float64Array(ksize)
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale
    const ss = 1 / filterScale
    // C's (int) cast truncates toward zero; both values are ≥ −0.5 + … so trunc matches.
    let xmin = Math.trunc(center - support + 0.5)
    if (xmin < 0) xmin = 0
    let xmax = Math.trunc(center + support + 0.5)
    if (xmax > inSize) xmax = inSize
    xmax -= xmin
    let ww = 0
    for (let x = 0; x < xmax; x++) {
      const w = filter.weight((x + xmin - center + 0.5) * ss)
      k[x] = w
      ww += w
    }
    for (let x = 0; x < ksize; x++) {
      const w = x < xmax ? (ww !== 0 ? k[x] / ww : k[x]) : 0
      weights[xx * ksize + x] = w < 0 ? Math.trunc(-0.5 + w * (1 << PRECISION_BITS)) : Math.trunc(0.5 + w * (1 << PRECISION_BITS))
    }
    bounds[xx * 2] = xmin
    bounds[xx * 2 + 1] = xmax
  }
  return { ksize, bounds, weights }
}

function clip8(v: number): number {
  if (v >= 1 << PRECISION_BITS << 8) return 255
  if (v <= 0) return 0
  return v >> PRECISION_BITS
}

/**
 * PIL `Image.resize((outWidth, outHeight), resample)` on an RGB uint8 image, bit-exact with
 * Pillow's 8-bit path (box = whole image, reducing_gap = None).
 */
export function resizePillow(img: RgbImage, outWidth: number, outHeight: number, resample: ResampleFilter = 'bilinear'): RgbImage {
  const filter = FILTERS[resample]
  const { width: inW, height: inH } = img
  if (inW === outWidth && inH === outHeight) return { width: inW, height: inH, data: img.data.slice() }
  const needH = inW !== outWidth
  const needV = inH !== outHeight
  const horiz = coefficients(inW, outWidth, filter)
  const vert = coefficients(inH, outHeight, filter)
  const half = 1 << (PRECISION_BITS - 1)

  let src = img.data
  let srcW = inW
  let srcH = inH
  const vBounds = vert.bounds.slice()
  if (needH) {
    // Only the rows the vertical pass reads are resampled horizontally.
    const yFirst = vBounds[0]
    const yLast = vBounds[outHeight * 2 - 2] + vBounds[outHeight * 2 - 1]
    for (let i = 0; i < outHeight; i++) vBounds[i * 2] -= yFirst
    const rows = yLast - yFirst
    const out = new Uint8Array(outWidth * rows * 3)
    const { ksize, bounds, weights } = horiz
    for (let y = 0; y < rows; y++) {
      const rowIn = (y + yFirst) * inW * 3
      const rowOut = y * outWidth * 3
      for (let xx = 0; xx < outWidth; xx++) {
        const xmin = bounds[xx * 2]
        const xmax = bounds[xx * 2 + 1]
        const kOff = xx * ksize
        let s0 = half
        let s1 = half
        let s2 = half
        for (let x = 0; x < xmax; x++) {
          const w = weights[kOff + x]
          const p = rowIn + (x + xmin) * 3
          s0 += src[p] * w
          s1 += src[p + 1] * w
          s2 += src[p + 2] * w
        }
        const o = rowOut + xx * 3
        out[o] = clip8(s0)
        out[o + 1] = clip8(s1)
        out[o + 2] = clip8(s2)
      }
    }
    src = out
    srcW = outWidth
    srcH = rows
  }
  if (needV) {
    const out = new Uint8Array(srcW * outHeight * 3)
    const { ksize, weights } = vert
    const rowLen = srcW * 3
    for (let yy = 0; yy < outHeight; yy++) {
      const ymin = vBounds[yy * 2]
      const ymax = vBounds[yy * 2 + 1]
      const kOff = yy * ksize
      for (let xx = 0; xx < srcW; xx++) {
        let s0 = half
        let s1 = half
        let s2 = half
        for (let y = 0; y < ymax; y++) {
          const w = weights[kOff + y]
          const p = (y + ymin) * rowLen + xx * 3
          s0 += src[p] * w
          s1 += src[p + 1] * w
          s2 += src[p + 2] * w
        }
        const o = yy * rowLen + xx * 3
        out[o] = clip8(s0)
        out[o + 1] = clip8(s1)
        out[o + 2] = clip8(s2)
      }
    }
    src = out
    srcH = outHeight
  }
  return { width: srcW, height: srcH, data: src }
}

/**
 * uint8 HWC → float32 CHW, in the processor's order and precision: rescale (float64 product
 * cast to float32), then (x − mean) / std in float32.
 */
export function toPixelValues(img: RgbImage, config: Pick<ImagePreprocessConfig, 'rescaleFactor' | 'imageMean' | 'imageStd' | 'doNormalize'>): Float32Array {
  const plane = img.width * img.height
  const out = new Float32Array(3 * plane)
  const f32 = new Float32Array(3)
  for (let c = 0; c < 3; c++) {
    f32[0] = config.imageMean[c]
    f32[1] = config.imageStd[c]
    const mean = f32[0]
    const std = f32[1]
    for (let i = 0; i < plane; i++) {
      f32[2] = img.data[i * 3 + c] * config.rescaleFactor
      let v = f32[2]
      if (config.doNormalize) {
        f32[2] = v - mean
        f32[2] = f32[2] / std
        v = f32[2]
      }
      out[c * plane + i] = v
    }
  }
  return out
}

/** Decoded, resized (exactly as PIL) and normalised: what the ViT reads. */
export interface PreparedImage {
  resized: RgbImage
  /** [3, H, W] float32. */
  pixelValues: Float32Array
}

export async function prepareImage(input: ImageInput, config: ImagePreprocessConfig): Promise<PreparedImage> {
  const decoded = await decodeImage(input)
  return prepareDecoded(decoded, config)
}

export function prepareDecoded(decoded: RgbImage, config: ImagePreprocessConfig): PreparedImage {
  const resized = resizePillow(decoded, config.width, config.height, config.resample)
  return { resized, pixelValues: toPixelValues(resized, config) }
}
