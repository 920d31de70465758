// Encoder threads of the embedding cache (CACHE_ENCODERS): tfjs-wasm computes on one core per
// thread, so the service runs one worker thread per encoder, each with its own backend and copy
// of the backbones, and its queue worker takes as many chunks at once. The service thread keeps
// everything else — Redis, Postgres, image reads, HTTP — and hands each chunk's forward passes to
// the thread it leased for that chunk (encodeAndStore calls `model.encodeTexts/encodeImages` of the
// backbone it is given; here those go to the thread).
//
// A thread that dies (an uncaught error, its heap limit, terminate()) rejects the calls in flight: only the chunk it was
// encoding fails, BullMQ retries it (groups already written are skipped), and a new thread takes
// the dead one's place. A native crash (segfault) takes the whole process down: then, as for any
// crashed replica, the chunks' locks lapse and the queue hands them out again.
import { Worker } from 'node:worker_threads'
import type { BackboneRuntimeName, ImageBackbone, ImageEncoding, TextBackbone, TextEncoding } from '@iisan/backbones'
import type { Logger } from '@iisan/config'
import { BackboneRegistry, type LoadedBackbone } from '@iisan/embedding-cache'

export interface EncoderThreadData {
  backend: string
  /** `runtime` is the one the service's copy resolved to, so a thread never picks another. */
  backbones: { id: number; modality: 'text' | 'image'; dir: string; fingerprint: string; runtime: BackboneRuntimeName }[]
}

type TextOptions = Omit<NonNullable<Parameters<TextBackbone['encodeTexts']>[1]>, 'onProgress'>
type ImageOptions = Omit<NonNullable<Parameters<ImageBackbone['encodeImages']>[1]>, 'onProgress'>

/** The encode options that cross to a thread: the data ones (a callback cannot). */
function plain<T extends object>(options: T): Omit<T, 'onProgress'> {
  return Object.fromEntries(Object.entries(options).filter(([, v]) => typeof v !== 'function')) as Omit<T, 'onProgress'>
}

export type EncodeRequest =
  | { id: number; op: 'text'; backboneId: number; texts: string[]; options: TextOptions }
  | { id: number; op: 'image'; backboneId: number; images: (string | Uint8Array)[]; options: ImageOptions }

export type EncodeReply =
  | { id: number; ok: true; op: 'text'; result: TextEncoding }
  | { id: number; ok: true; op: 'image'; result: ImageEncoding[] }
  | { id: number; ok: false; error: string }

type EncodeRequestBody = EncodeRequest extends infer R ? (R extends EncodeRequest ? Omit<R, 'id'> : never) : never

/** An encoder thread stopped while it had work: the chunk fails this attempt and is retried. */
export class EncoderExitedError extends Error {
  constructor(index: number, why: string) {
    super(`encoder thread ${index} stopped (${why}); the chunk will be retried`)
    this.name = 'EncoderExitedError'
  }
}

const BOOT = new URL('./encoder-boot.mjs', import.meta.url)
const RESPAWN_DELAY_MS = 1000

interface Slot {
  index: number
  worker: Worker
  ready: boolean
  busy: boolean
  /** Why the thread stopped, once it has. */
  exit?: string
  pending: Map<number, { resolve: (r: EncodeReply) => void; reject: (e: Error) => void }>
}

/** A thread leased to one chunk: the registry's backbones with their encode calls sent to it. */
export interface EncoderLease {
  index: number
  registry: BackboneRegistry
  release(): void
}

export class EncoderPool {
  private readonly slots: (Slot | null)[]
  private readonly waiting: { resolve: (slot: Slot) => void; reject: (err: Error) => void }[] = []
  private nextId = 1
  private closing = false

  private constructor(
    readonly size: number,
    private readonly data: EncoderThreadData,
    private readonly registry: BackboneRegistry,
    private readonly log: Logger,
  ) {
    this.slots = new Array<Slot | null>(size).fill(null)
  }

  /** Starts `size` threads over the registry's backbones; resolves when all are ready, throws if one cannot start. */
  static async start(size: number, registry: BackboneRegistry, backend: string, log: Logger): Promise<EncoderPool> {
    const data: EncoderThreadData = {
      backend,
      backbones: registry.list().map((b) => ({ id: b.id, modality: b.modality, dir: b.dir, fingerprint: b.fingerprint, runtime: b.model.runtime })),
    }
    const pool = new EncoderPool(size, data, registry, log)
    try {
      await Promise.all(Array.from({ length: size }, (_, i) => pool.spawn(i)))
    } catch (err) {
      await pool.close()
      throw err
    }
    log.info({ encoders: size }, 'encoder threads ready')
    return pool
  }

  private spawn(index: number): Promise<void> {
    const worker = new Worker(BOOT, { workerData: this.data, stdout: false, stderr: false })
    const slot: Slot = { index, worker, ready: false, busy: false, pending: new Map() }
    this.slots[index] = slot
    return new Promise<void>((resolve, reject) => {
      worker.on('message', (msg: EncodeReply | { ready: boolean; error?: string }) => {
        if ('ready' in msg) {
          if (!msg.ready) return reject(new Error(`encoder thread ${index} could not start: ${msg.error}`))
          slot.ready = true
          this.hand(slot)
          return resolve()
        }
        const call = slot.pending.get(msg.id)
        slot.pending.delete(msg.id)
        call?.resolve(msg)
      })
      worker.on('error', (err) => this.log.error({ encoder: index, err }, 'encoder thread error'))
      worker.on('exit', (code) => {
        const why = `exit code ${code}`
        slot.exit = why
        const started = slot.ready
        slot.ready = false
        if (!started) reject(new Error(`encoder thread ${index} exited while starting (${why})`))
        for (const call of slot.pending.values()) call.reject(new EncoderExitedError(index, why))
        slot.pending.clear()
        if (this.slots[index] !== slot) return
        this.slots[index] = null
        if (this.closing) return
        this.log.warn({ encoder: index, code }, 'encoder thread stopped; starting another')
        setTimeout(() => this.respawn(index), started ? 0 : RESPAWN_DELAY_MS).unref()
      })
    })
  }

  private respawn(index: number): void {
    if (this.closing || this.slots[index]) return
    this.spawn(index).catch((err: unknown) => this.log.error({ encoder: index, err }, 'encoder thread could not start again'))
  }

  /** A free ready thread to the oldest waiter, if any. */
  private hand(slot: Slot): void {
    if (!slot.ready || slot.busy || this.closing) return
    const next = this.waiting.shift()
    if (!next) return
    slot.busy = true
    next.resolve(slot)
  }

  private call(slot: Slot, req: EncodeRequestBody): Promise<EncodeReply> {
    if (slot.exit !== undefined) return Promise.reject(new EncoderExitedError(slot.index, slot.exit))
    const id = this.nextId++
    return new Promise<EncodeReply>((resolve, reject) => {
      slot.pending.set(id, { resolve, reject })
      slot.worker.postMessage({ ...req, id })
    })
  }

  /** Waits for a free thread and leases it (release it when the chunk is done). */
  async lease(): Promise<EncoderLease> {
    const free = this.slots.find((s): s is Slot => s !== null && s.ready && !s.busy)
    const slot = free ?? (await new Promise<Slot>((resolve, reject) => this.waiting.push({ resolve, reject })))
    slot.busy = true
    let released = false
    return {
      index: slot.index,
      registry: BackboneRegistry.of(this.registry.list().map((b) => this.onThread(slot, b))),
      release: () => {
        if (released) return
        released = true
        slot.busy = false
        this.hand(slot)
      },
    }
  }

  /** The backbone with its forward passes sent to `slot` (everything else, e.g. tokenize, stays the service's copy). */
  private onThread(slot: Slot, b: LoadedBackbone): LoadedBackbone {
    const failed = (reply: EncodeReply): never => {
      throw new Error(reply.ok ? `encoder thread ${slot.index} answered ${reply.op} to a ${b.modality} request` : reply.error)
    }
    if (b.modality === 'text') {
      const encodeTexts: TextBackbone['encodeTexts'] = async (texts, options = {}) => {
        const reply = await this.call(slot, { op: 'text', backboneId: b.id, texts, options: plain(options) })
        return reply.ok && reply.op === 'text' ? reply.result : failed(reply)
      }
      return { ...b, model: overriding(b.model, { encodeTexts }) }
    }
    const encodeImages: ImageBackbone['encodeImages'] = async (images, options = {}) => {
      const reply = await this.call(slot, { op: 'image', backboneId: b.id, images, options: plain(options) })
      return reply.ok && reply.op === 'image' ? reply.result : failed(reply)
    }
    return { ...b, model: overriding(b.model, { encodeImages }) }
  }

  /** The live threads by index (null while one is being replaced); for tests and tools. */
  threads(): (Worker | null)[] {
    return this.slots.map((s) => s?.worker ?? null)
  }

  /** Indices of the threads leased to a chunk right now. */
  busy(): number[] {
    return this.slots.flatMap((s) => (s?.busy ? [s.index] : []))
  }

  async close(): Promise<void> {
    this.closing = true
    for (const w of this.waiting.splice(0)) w.reject(new Error('the encoder threads are shutting down'))
    await Promise.all(this.slots.map((s) => s?.worker.terminate()))
  }
}

/** `target` with some members replaced; its other methods run on the real object (private fields work). */
function overriding<T extends object>(target: T, members: Partial<T>): T {
  return new Proxy(target, {
    get(t, prop) {
      if (Object.hasOwn(members, prop)) return members[prop as keyof T]
      const value: unknown = Reflect.get(t, prop, t)
      return typeof value === 'function' ? value.bind(t) : value
    },
  })
}
