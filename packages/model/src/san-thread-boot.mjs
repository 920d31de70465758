// Entry of a SAN training thread (san-threads.ts): worker threads do not inherit tsx's loader from
// the process that starts them (tsx, vitest), so register it here, then load the thread's code.
import { register } from 'tsx/esm/api'

register()
await import('./san-thread.ts')
