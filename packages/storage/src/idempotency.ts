// Idempotency keys (table idempotency_keys): the HTTP layer claims a key before a creating request
// runs and stores its response when it is done, so a retry gets that response instead of a second
// dataset, job or event.
//
// A row is in progress while status_code is NULL; its owner renews created_at (a lease) while it
// works, so a row left by a process that died is taken over once the lease runs out instead of
// blocking its key until it expires. A stored response expires `ttlSeconds` after it was stored.
// Every time comes from the database clock: replicas' clocks may differ.
import type { Db, JsonInput } from './client.ts'

/** One key on one route, with the fingerprint of the request that used it. */
export interface IdempotencyKeyRef {
  /** method + route template, e.g. "POST /v1/datasets" */
  scope: string
  key: string
  requestHash: string
}

export type IdempotencyClaim =
  /** The key is this request's now: run it, then complete or release the key. */
  | { outcome: 'claimed' }
  /** Another request with the key is still running. */
  | { outcome: 'in-progress'; requestHash: string }
  /** The key's request is done: its response. */
  | { outcome: 'completed'; requestHash: string; statusCode: number; responseBody: unknown }

export interface IdempotencyTimes {
  /** How long a stored response is kept. */
  ttlSeconds: number
  /** How long an in-progress row without a renewal counts as alive. */
  leaseSeconds: number
}

/**
 * Claims the key for `ref.requestHash` unless another request holds it or has completed it (then
 * says which, with that request's fingerprint). Expired rows and lapsed leases are taken over.
 */
export async function claimIdempotencyKey(db: Db, ref: IdempotencyKeyRef, times: IdempotencyTimes): Promise<IdempotencyClaim> {
  // A row deleted between the failed claim and the read (its owner failed and released it) is
  // claimed on the next round; more than a few rounds would take a stream of failing requests.
  for (let round = 0; round < 5; round++) {
    // ON CONFLICT serialises concurrent claims of one key: exactly one of them gets a row back.
    const claimed = await db.$queryRaw<{ claimed: boolean }[]>`
      INSERT INTO idempotency_keys (scope, key, request_hash) VALUES (${ref.scope}, ${ref.key}, ${ref.requestHash})
      ON CONFLICT (scope, key) DO UPDATE
        SET request_hash = EXCLUDED.request_hash, status_code = NULL, response_body = NULL, created_at = now()
        WHERE idempotency_keys.created_at < now() - make_interval(secs => ${times.ttlSeconds})
           OR (idempotency_keys.status_code IS NULL AND idempotency_keys.created_at < now() - make_interval(secs => ${times.leaseSeconds}))
      RETURNING true AS claimed`
    if (claimed.length) return { outcome: 'claimed' }
    const row = await db.idempotencyKey.findUnique({ where: { scope_key: { scope: ref.scope, key: ref.key } } })
    if (!row) continue
    if (row.statusCode === null) return { outcome: 'in-progress', requestHash: row.requestHash }
    return { outcome: 'completed', requestHash: row.requestHash, statusCode: row.statusCode, responseBody: row.responseBody }
  }
  throw new Error(`idempotency key ${ref.key} (${ref.scope}) could not be claimed or read`)
}

/** Extends the lease of an in-progress key; false when the key is no longer this request's. */
export async function renewIdempotencyKey(db: Db, ref: IdempotencyKeyRef): Promise<boolean> {
  const n = await db.$executeRaw`
    UPDATE idempotency_keys SET created_at = now()
    WHERE scope = ${ref.scope} AND key = ${ref.key} AND request_hash = ${ref.requestHash} AND status_code IS NULL`
  return n > 0
}

/** Stores the response of the request holding the key; false when the key is no longer its. */
export async function completeIdempotencyKey(db: Db, ref: IdempotencyKeyRef, response: { statusCode: number; body: JsonInput }): Promise<boolean> {
  const n = await db.$executeRaw`
    UPDATE idempotency_keys SET status_code = ${response.statusCode}, response_body = ${JSON.stringify(response.body)}::jsonb, created_at = now()
    WHERE scope = ${ref.scope} AND key = ${ref.key} AND request_hash = ${ref.requestHash} AND status_code IS NULL`
  return n > 0
}

/** Gives an in-progress key up (the request failed): a retry with it runs again. */
export async function releaseIdempotencyKey(db: Db, ref: IdempotencyKeyRef): Promise<void> {
  await db.idempotencyKey.deleteMany({ where: { scope: ref.scope, key: ref.key, requestHash: ref.requestHash, statusCode: null } })
}

/** Deletes stored responses older than `ttlSeconds` and abandoned in-progress rows as old; returns how many. */
export async function deleteExpiredIdempotencyKeys(db: Db, ttlSeconds: number): Promise<number> {
  return db.$executeRaw`DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(secs => ${ttlSeconds})`
}
