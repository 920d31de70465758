// Entry of an encoder thread (encoders.ts): worker threads do not inherit tsx's loader from the
// process that starts them (`tsx main.ts`, vitest), so register it here, then load the thread's code.
import { register } from 'tsx/esm/api'

register()
await import('./encoder-thread.ts')
