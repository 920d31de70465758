// What every bench script needs around its measurement: a one-line failure, a free port, and the
// removal of the Redis keys a throwaway run created.
import net, { type AddressInfo } from 'node:net'
import type { Redis } from 'ioredis'
import { oneLine } from '@iisan/pipeline/cli/args'

/**
 * One line on stderr and a non-zero exit: a wrong argument (or a failed run) prints no stack
 * trace. The project's tools (@iisan/pipeline/cli/args) exit 2; the benches keep their 1.
 */
export function fail(message: string, code = 1): never {
  console.error(`error: ${oneLine(message)}`)
  process.exit(code)
}

export async function freePort(): Promise<number> {
  const server = net.createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  await new Promise((resolve) => server.close(resolve))
  return port
}

/** Deletes every key under `prefix:` (a run's own queue prefix). */
export async function deleteKeysWithPrefix(redis: Redis, prefix: string): Promise<void> {
  let cursor = '0'
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 500)
    cursor = next
    if (keys.length) await redis.del(...keys)
  } while (cursor !== '0')
}
