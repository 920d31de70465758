// `npm run cache:gc` — removes the cached backbone hidden states that no item of any dataset
// references any more (deleting a dataset leaves its states behind, since other datasets may
// share them), and prints what went, per backbone. Safe while the services run: states are only
// ever written for items that exist, and one removed here is recomputed if its content comes back.
import { ConfigError, loadConfig } from '@iisan/config'
import { errorMessage, fail, failOnUncaught, parseOptions } from '@iisan/pipeline/cli/args'
import { createPrisma, removeOrphanHiddenStates } from '@iisan/storage'

failOnUncaught()
parseOptions({}, 'usage: npm run cache:gc (reads DATABASE_URL)')
let databaseUrl: string
try {
  databaseUrl = loadConfig().databaseUrl
} catch (e) {
  if (!(e instanceof ConfigError)) throw e
  fail(e.message)
}
const prisma = createPrisma(databaseUrl)
try {
  const removed = await removeOrphanHiddenStates(prisma)
  const mb = (bytes: number) => `${(bytes / 2 ** 20).toFixed(1)} MB`
  for (const r of removed) console.log(`removed ${r.states} ${r.modality} state(s), ${mb(r.bytes)}, of backbone ${r.name ?? r.fingerprint.slice(0, 12)} (id ${r.backboneId})`)
  const states = removed.reduce((n, r) => n + r.states, 0)
  console.log(states ? `removed ${states} unreferenced hidden state(s), ${mb(removed.reduce((n, r) => n + r.bytes, 0))} in all` : 'no unreferenced hidden states: nothing removed')
} catch (e) {
  fail(`cache garbage collection failed: ${errorMessage(e)}`)
} finally {
  await prisma.$disconnect()
}
