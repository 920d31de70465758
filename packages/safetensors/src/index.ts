// safetensors (https://github.com/huggingface/safetensors): 8-byte little-endian header length,
// a JSON header { name: { dtype, shape, data_offsets: [begin, end] }, __metadata__? }, then the
// raw little-endian tensor bytes. Small enough to own; shared by model checkpoints and backbones.

export type SafeDType = 'F32' | 'F16' | 'BF16' | 'I32' | 'I64'

export interface TensorEntry {
  dtype: SafeDType
  shape: number[]
  /** View into the file's bytes (no copy). */
  bytes: Uint8Array
}

export interface SafetensorsFile {
  metadata: Record<string, string>
  tensors: Map<string, TensorEntry>
}

export class SafetensorsError extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'SafetensorsError'
  }
}

const BYTES_PER_ELEMENT: Record<SafeDType, number> = { F32: 4, F16: 2, BF16: 2, I32: 4, I64: 8 }

export function parseSafetensors(buffer: Uint8Array): SafetensorsFile {
  if (buffer.byteLength < 8) throw new SafetensorsError('file too short for a safetensors header')
  const view = new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength)
  const headerLength = Number(view.getBigUint64(0, true))
  if (8 + headerLength > buffer.byteLength) throw new SafetensorsError('header length exceeds file size')
  let header: Record<string, unknown>
  try {
    header = JSON.parse(new TextDecoder().decode(buffer.subarray(8, 8 + headerLength)))
  } catch {
    throw new SafetensorsError('header is not valid JSON')
  }
  const dataStart = 8 + headerLength
  const tensors = new Map<string, TensorEntry>()
  let metadata: Record<string, string> = {}
  for (const [name, raw] of Object.entries(header)) {
    if (name === '__metadata__') {
      metadata = (raw ?? {}) as Record<string, string>
      continue
    }
    const info = raw as { dtype: string; shape: number[]; data_offsets: [number, number] }
    if (!(info.dtype in BYTES_PER_ELEMENT)) throw new SafetensorsError(`tensor ${name}: unsupported dtype ${info.dtype}`)
    const dtype = info.dtype as SafeDType
    const [begin, end] = info.data_offsets
    const expected = info.shape.reduce((a, b) => a * b, 1) * BYTES_PER_ELEMENT[dtype]
    if (end - begin !== expected || dataStart + end > buffer.byteLength) {
      throw new SafetensorsError(`tensor ${name}: data offsets do not match shape ${JSON.stringify(info.shape)}`)
    }
    tensors.set(name, { dtype, shape: info.shape, bytes: buffer.subarray(dataStart + begin, dataStart + end) })
  }
  return { metadata, tensors }
}

/** Decodes any float dtype to float32 (F16 and BF16 are widened exactly). */
export function toFloat32(entry: TensorEntry): Float32Array {
  const n = entry.shape.reduce((a, b) => a * b, 1)
  const aligned = copyAligned(entry.bytes)
  switch (entry.dtype) {
    case 'F32':
      return new Float32Array(aligned.buffer, aligned.byteOffset, n)
    case 'F16':
      return float16ToFloat32(new Uint16Array(aligned.buffer, aligned.byteOffset, n))
    case 'BF16': {
      const src = new Uint16Array(aligned.buffer, aligned.byteOffset, n)
      const out = new Uint32Array(n)
      for (let i = 0; i < n; i++) out[i] = src[i] << 16
      return new Float32Array(out.buffer)
    }
    case 'I32':
      return Float32Array.from(new Int32Array(aligned.buffer, aligned.byteOffset, n))
    case 'I64':
      return Float32Array.from(new BigInt64Array(aligned.buffer, aligned.byteOffset, n), Number)
  }
}

function copyAligned(bytes: Uint8Array): Uint8Array {
  // Typed-array views need element alignment; the file's data section usually is aligned, but
  // a subarray of a Node Buffer from a pool may not be.
  return bytes.byteOffset % 8 === 0 ? bytes : new Uint8Array(bytes)
}

export interface TensorToWrite {
  dtype: SafeDType
  shape: number[]
  data: Float32Array | Int32Array | Uint16Array
}

export function serializeSafetensors(tensors: Record<string, TensorToWrite>, metadata: Record<string, string> = {}): Uint8Array {
  const header: Record<string, unknown> = {}
  if (Object.keys(metadata).length) header.__metadata__ = metadata
  let offset = 0
  const names = Object.keys(tensors).sort()
  for (const name of names) {
    const t = tensors[name]
    const n = t.shape.reduce((a, b) => a * b, 1)
    if (t.data.length !== n) throw new SafetensorsError(`tensor ${name}: ${t.data.length} values for shape ${JSON.stringify(t.shape)}`)
    const size = n * BYTES_PER_ELEMENT[t.dtype]
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + size] }
    offset += size
  }
  let json = JSON.stringify(header)
  // Pad the header so the data section starts 8-byte aligned, as the reference writer does.
  json += ' '.repeat((8 - ((8 + Buffer.byteLength(json)) % 8)) % 8)
  const headerBytes = new TextEncoder().encode(json)
  const out = new Uint8Array(8 + headerBytes.length + offset)
  new DataView(out.buffer).setBigUint64(0, BigInt(headerBytes.length), true)
  out.set(headerBytes, 8)
  let cursor = 8 + headerBytes.length
  for (const name of names) {
    const t = tensors[name]
    const bytes = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength)
    out.set(bytes, cursor)
    cursor += bytes.length
  }
  return out
}

let halfTable: Float32Array | undefined

/**
 * float32 value of every one of the 65,536 float16 bit patterns, built once: bulk decoders
 * (state stores, state streams) look values up instead of converting one by one.
 */
export function float16Table(): Float32Array {
  halfTable ??= float16ToFloat32(Uint16Array.from({ length: 65536 }, (_, i) => i))
  return halfTable
}

export function float16ToFloat32(src: Uint16Array): Float32Array {
  const out = new Float32Array(src.length)
  for (let i = 0; i < src.length; i++) {
    const h = src[i]
    const sign = h & 0x8000 ? -1 : 1
    const exponent = (h >> 10) & 0x1f
    const fraction = h & 0x3ff
    if (exponent === 0) out[i] = sign * 2 ** -14 * (fraction / 1024)
    else if (exponent === 0x1f) out[i] = fraction ? NaN : sign * Infinity
    else out[i] = sign * 2 ** (exponent - 15) * (1 + fraction / 1024)
  }
  return out
}

/** Round-to-nearest-even float32 → float16 (for compact hidden-state storage). */
export function float32ToFloat16(src: Float32Array): Uint16Array {
  const out = new Uint16Array(src.length)
  const f32 = new Float32Array(1)
  const u32 = new Uint32Array(f32.buffer)
  for (let i = 0; i < src.length; i++) {
    f32[0] = src[i]
    const x = u32[0]
    const sign = (x >>> 16) & 0x8000
    let exponent = ((x >>> 23) & 0xff) - 127 + 15
    let mantissa = x & 0x7fffff
    if (((x >>> 23) & 0xff) === 0xff) {
      out[i] = sign | 0x7c00 | (mantissa ? 0x200 : 0)
      continue
    }
    if (exponent >= 0x1f) {
      out[i] = sign | 0x7c00
      continue
    }
    if (exponent <= 0) {
      if (exponent < -10) {
        out[i] = sign
        continue
      }
      mantissa |= 0x800000
      const shift = 14 - exponent
      let half = mantissa >> shift
      const rem = mantissa & ((1 << shift) - 1)
      const mid = 1 << (shift - 1)
      if (rem > mid || (rem === mid && half & 1)) half++
      out[i] = sign | half
      continue
    }
    let half = (exponent << 10) | (mantissa >> 13)
    const rem = mantissa & 0x1fff
    if (rem > 0x1000 || (rem === 0x1000 && half & 1)) half++
    out[i] = sign | half
  }
  return out
}
