// Every training method, registered once. Everything else (trainer, worker, CLI, API, serving,
// benches, dashboard) asks this registry; adding a method is one file here and one line below.
import { adapter } from './adapter.ts'
import { bitfit } from './bitfit.ts'
import { fft } from './fft.ts'
import { iisan, iisanUncached } from './iisan.ts'
import { lora } from './lora.ts'
import type { AnyTrainingMethod } from './method.ts'
import { sasRecId } from './sasrec-id.ts'

/** In the order the paper compares them: the ID baseline, IISAN, then the fine-tuning baselines. */
export const METHODS: readonly AnyTrainingMethod[] = [sasRecId, iisan, iisanUncached, fft, adapter, lora, bitfit] as unknown as AnyTrainingMethod[]

export const METHOD_NAMES: readonly string[] = METHODS.map((m) => m.name)

export class UnknownMethod extends Error {
  constructor(readonly method: string) {
    super(`unknown method ${JSON.stringify(method)} (available: ${METHOD_NAMES.join(', ')})`)
    this.name = 'UnknownMethod'
  }
}

export function findMethod(name: string): AnyTrainingMethod | undefined {
  return METHODS.find((m) => m.name === name)
}

export function getMethod(name: string): AnyTrainingMethod {
  const method = findMethod(name)
  if (!method) throw new UnknownMethod(name)
  return method
}
