// One encoder thread of the embedding cache (see encoders.ts): its own tensor backend (tfjs-wasm
// is one core per thread) and its own copy of the backbones, loaded from the folders the service
// registered. It only runs forward passes: the service thread reads items and images, writes
// states and talks to the queue. Messages: EncodeRequest in, EncodeReply out.
import { parentPort, workerData } from 'node:worker_threads'
import { loadImageBackbone, loadTextBackbone, type ImageBackbone, type TextBackbone } from '@iisan/backbones'
import { initBackend, type BackendName } from '@iisan/model/backend'
import type { EncoderThreadData, EncodeReply, EncodeRequest } from './encoders.ts'

const port = parentPort!
const data = workerData as EncoderThreadData
const text = new Map<number, TextBackbone>()
const image = new Map<number, ImageBackbone>()

async function start(): Promise<void> {
  process.env.TF_BACKEND_QUIET = '1'
  await initBackend({ prefer: data.backend as BackendName })
  for (const b of data.backbones) {
    const model = b.modality === 'text' ? await loadTextBackbone(b.dir, { runtime: b.runtime }) : await loadImageBackbone(b.dir, { runtime: b.runtime })
    // The folder changed on disk since the service loaded it: these would be other states.
    if (model.fingerprint !== b.fingerprint) throw new Error(`${b.dir} now loads as backbone ${model.fingerprint.slice(0, 12)}, not ${b.fingerprint.slice(0, 12)} as the service registered it: restart the service`)
    if (b.modality === 'text') text.set(b.id, model as TextBackbone)
    else image.set(b.id, model as ImageBackbone)
  }
}

async function handle(req: EncodeRequest): Promise<EncodeReply> {
  if (req.op === 'text') {
    const model = text.get(req.backboneId)
    if (!model) throw new Error(`text backbone ${req.backboneId} is not loaded by this encoder thread`)
    const enc = await model.encodeTexts(req.texts, req.options)
    return { id: req.id, ok: true, op: 'text', result: enc }
  }
  const model = image.get(req.backboneId)
  if (!model) throw new Error(`image backbone ${req.backboneId} is not loaded by this encoder thread`)
  return { id: req.id, ok: true, op: 'image', result: await model.encodeImages(req.images, req.options) }
}

function transferables(reply: EncodeReply): ArrayBuffer[] {
  if (!reply.ok) return []
  const views = reply.op === 'text' ? [reply.result.clsPerLayer, reply.result.inputIds, reply.result.attentionMask] : reply.result.flatMap((r) => (r.ok ? [r.cls] : []))
  // only whole buffers a view owns can move; a shared or sliced one is copied
  return views.filter((v) => v.byteOffset === 0 && v.byteLength === v.buffer.byteLength).map((v) => v.buffer as ArrayBuffer)
}

try {
  await start()
  port.postMessage({ ready: true })
} catch (err) {
  port.postMessage({ ready: false, error: err instanceof Error ? err.message : String(err) })
  process.exit(1)
}

// One request at a time (the service leases a thread to one chunk); queued in order otherwise.
let chain = Promise.resolve()
port.on('message', (req: EncodeRequest) => {
  chain = chain.then(async () => {
    let reply: EncodeReply
    try {
      reply = await handle(req)
    } catch (err) {
      reply = { id: req.id, ok: false, error: err instanceof Error ? err.message : String(err) }
    }
    const moved = transferables(reply)
    port.postMessage(reply, [...new Set(moved)])
  })
})
