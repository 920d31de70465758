export * from './training-config.ts'
export * from './import-dataset.ts'
export * from './training-job.ts'
export * from './serving-registry.ts'
