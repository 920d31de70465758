// Float16 little-endian (de)serialisation of hidden states. The conversions themselves are the
// codec's (@iisan/safetensors); this module fixes the byte order (stored and streamed states
// are always little-endian, whatever the host) and decodes straight into a caller's buffer
// through a 65,536-entry table, so bulk reads allocate nothing per item.
import { float16Table, float32ToFloat16 } from '@iisan/safetensors'

const HOST_LE = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1

/** float32 → float16 (round to nearest even), as little-endian bytes: 2 bytes per value. */
export function encodeFloat16LE(values: Float32Array): Uint8Array {
  const half = float32ToFloat16(values)
  const bytes = new Uint8Array(half.buffer, half.byteOffset, half.byteLength)
  if (!HOST_LE) {
    for (let i = 0; i < bytes.length; i += 2) {
      const t = bytes[i]
      bytes[i] = bytes[i + 1]
      bytes[i + 1] = t
    }
  }
  return bytes
}

/**
 * Decode `count` little-endian float16 values starting at `bytes[byteOffset]` into
 * `out[outOffset…]`. No allocation when the source is 2-byte aligned on a little-endian host.
 */
export function decodeFloat16LE(bytes: Uint8Array, byteOffset: number, count: number, out: Float32Array, outOffset: number): void {
  if (byteOffset + 2 * count > bytes.byteLength) throw new RangeError(`float16 decode past the end (${byteOffset} + 2×${count} > ${bytes.byteLength})`)
  if (outOffset + count > out.length) throw new RangeError(`float16 decode past the output (${outOffset} + ${count} > ${out.length})`)
  const t = float16Table()
  const start = bytes.byteOffset + byteOffset
  if (HOST_LE && (start & 1) === 0) {
    const half = new Uint16Array(bytes.buffer, start, count)
    for (let i = 0; i < count; i++) out[outOffset + i] = t[half[i]]
    return
  }
  for (let i = 0, p = byteOffset; i < count; i++, p += 2) out[outOffset + i] = t[bytes[p] | (bytes[p + 1] << 8)]
}

/** A stored [rows, d] float16 LE blob as a new Float32Array. */
export function float16BytesToFloat32(bytes: Uint8Array): Float32Array {
  if (bytes.byteLength % 2) throw new RangeError(`float16 data of odd length ${bytes.byteLength}`)
  const out = new Float32Array(bytes.byteLength / 2)
  decodeFloat16LE(bytes, 0, out.length, out, 0)
  return out
}
