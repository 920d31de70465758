// @iisan/pipeline: what trains (./training: the worker's job, its inputs, the CLI's loaders) and
// what serves (./serving: the API's model registry and cold start), plus dataset import and the
// embedded sample (./dataset). Training and serving do not import each other; both read cached
// states through @iisan/embedding-cache.
export * from './dataset/import-dataset.ts'
export * from './dataset/sample.ts'
export * from './training/training-config.ts'
export * from './training/progress.ts'
export * from './training/inputs.ts'
export * from './training/training-job.ts'
export * from './training/job-lease.ts'
export * from './training/job-reconciler.ts'
export * from './training/cache-states.ts'
export * from './training/item-content.ts'
export * from './training/states-folder.ts'
export * from './serving/serving-registry.ts'
export * from './serving/cold-start.ts'
// reading cached states from storage lives in the embedding cache; re-exported under their old names
export { unseenItemStates, cachedStatesOf } from '@iisan/embedding-cache/stored-states'
