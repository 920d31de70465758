import { Redis, type RedisOptions } from 'ioredis'

/**
 * An ioredis connection suitable for BullMQ queues and workers (maxRetriesPerRequest: null is
 * required for workers' blocking commands). Close it with `quit()`.
 */
export function createRedisConnection(url: string, options: RedisOptions = {}): Redis {
  return new Redis(url, { maxRetriesPerRequest: null, enableReadyCheck: true, ...options })
}

export type { Redis, RedisOptions } from 'ioredis'

/**
 * A connection for commands a request waits on (enqueueing, publishing, pings): during a Redis
 * outage they fail after a short retry instead of waiting for Redis to come back, so the caller
 * can answer 503. Blocking consumers (BullMQ workers) need createRedisConnection instead.
 */
export function createCommandConnection(url: string, options: RedisOptions = {}): Redis {
  return new Redis(url, { maxRetriesPerRequest: 2, enableReadyCheck: true, ...options })
}
