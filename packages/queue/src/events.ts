import type { Redis } from 'ioredis'
import { parseModelActivatedEvent, type ModelActivatedEvent } from './payloads.ts'

export const MODEL_ACTIVATED = 'model-activated'

/** Redis pub/sub channel for model activations: `<prefix>:model-activated`. */
export function modelActivatedChannel(prefix: string): string {
  return `${prefix}:${MODEL_ACTIVATED}`
}

/** Announce an activation (API replicas reload their in-memory model). Returns the number of receivers. */
export async function publishModelActivated(
  redis: Redis,
  prefix: string,
  event: Omit<ModelActivatedEvent, 'activatedAt'> & { activatedAt?: string | Date },
): Promise<number> {
  const activatedAt = event.activatedAt instanceof Date ? event.activatedAt.toISOString() : event.activatedAt ?? new Date().toISOString()
  const payload = parseModelActivatedEvent({ datasetId: event.datasetId, modelVersionId: event.modelVersionId, activatedAt })
  return redis.publish(modelActivatedChannel(prefix), JSON.stringify(payload))
}

export interface Subscription {
  /** Unsubscribe and close the dedicated subscriber connection. */
  close(): Promise<void>
}

/**
 * Subscribe to model activations. Uses a duplicate of `redis` (a subscribed connection can do
 * nothing else); resolves once the subscription is active. Malformed messages go to `onError`.
 */
export async function subscribeModelActivated(
  redis: Redis,
  prefix: string,
  handler: (event: ModelActivatedEvent) => void | Promise<void>,
  onError: (error: unknown) => void = () => {},
): Promise<Subscription> {
  const channel = modelActivatedChannel(prefix)
  const sub = redis.duplicate()
  sub.on('error', onError)
  sub.on('message', (ch: string, message: string) => {
    if (ch !== channel) return
    let event: ModelActivatedEvent
    try {
      event = parseModelActivatedEvent(JSON.parse(message))
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
