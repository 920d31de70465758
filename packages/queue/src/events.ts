// Redis pub/sub between services. Every API replica subscribes, so a model activated (or
// updated) anywhere is served everywhere without a restart. Channels are `<prefix>:<name>`.
import type { Redis } from 'ioredis'
import { parseModelActivatedEvent, parseModelUpdatedEvent, type ModelActivatedEvent, type ModelUpdatedEvent } from './payloads.ts'

export const MODEL_ACTIVATED = 'model-activated'
export const MODEL_UPDATED = 'model-updated'

export function modelActivatedChannel(prefix: string): string {
  return `${prefix}:${MODEL_ACTIVATED}`
}

export function modelUpdatedChannel(prefix: string): string {
  return `${prefix}:${MODEL_UPDATED}`
}

/** Announce an activation (API replicas reload their in-memory model). Returns the number of receivers. */
export async function publishModelActivated(
  redis: Redis,
  prefix: string,
  event: Omit<ModelActivatedEvent, 'activatedAt'> & { activatedAt?: string | Date },
): Promise<number> {
  const activatedAt = event.activatedAt instanceof Date ? event.activatedAt.toISOString() : (event.activatedAt ?? new Date().toISOString())
  const payload = parseModelActivatedEvent({ datasetId: event.datasetId, modelVersionId: event.modelVersionId, activatedAt })
  return redis.publish(modelActivatedChannel(prefix), JSON.stringify(payload))
}

/** Announce that a model version changed in place (cold-start items appended). */
export async function publishModelUpdated(redis: Redis, prefix: string, event: ModelUpdatedEvent): Promise<number> {
  return redis.publish(modelUpdatedChannel(prefix), JSON.stringify(parseModelUpdatedEvent(event)))
}

export interface Subscription {
  /** Unsubscribe and close the dedicated subscriber connection. */
  close(): Promise<void>
}

export type EventHandler<T> = (event: T) => void | Promise<void>

export function subscribeModelActivated(redis: Redis, prefix: string, handler: EventHandler<ModelActivatedEvent>, onError?: (error: unknown) => void): Promise<Subscription> {
  return subscribeChannel(redis, modelActivatedChannel(prefix), parseModelActivatedEvent, handler, onError)
}

export function subscribeModelUpdated(redis: Redis, prefix: string, handler: EventHandler<ModelUpdatedEvent>, onError?: (error: unknown) => void): Promise<Subscription> {
  return subscribeChannel(redis, modelUpdatedChannel(prefix), parseModelUpdatedEvent, handler, onError)
}

/**
 * Subscribe on a dedicated connection (a subscribed ioredis connection can run no other
 * command). Malformed messages and handler failures go to `onError`, never crash the process.
 */
async function subscribeChannel<T>(
  redis: Redis,
  channel: string,
  parse: (data: unknown) => T,
  handler: EventHandler<T>,
  onError: (error: unknown) => void = () => {},
): Promise<Subscription> {
  const sub = redis.duplicate()
  sub.on('error', onError)
  sub.on('message', (ch: string, message: string) => {
    if (ch !== channel) return
    let event: T
    try {
      event = parse(JSON.parse(message))
    } catch (e) {
      onError(e)
      return
    }
    Promise.resolve()
      .then(() => handler(event))
      .catch(onError)
  })
  await sub.subscribe(channel)
  return {
    async close() {
      try {
        await sub.unsubscribe(channel)
      } finally {
        await sub.quit().catch(() => sub.disconnect())
      }
    },
  }
}
