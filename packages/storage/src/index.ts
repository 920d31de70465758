/**
 * @iisan/storage — the Prisma client (PostgreSQL via @prisma/adapter-pg) and the repository
 * functions the services use. Generated types are re-exported from ./generated/prisma.
 */
export { PrismaClient, Prisma } from './generated/prisma/client.ts'
export type {
  Dataset,
  Item,
  DatasetUser,
  Interaction,
  Backbone,
  HiddenState,
  CacheBuild,
  TrainingJob,
  EpochMetric,
  ModelVersion,
} from './generated/prisma/client.ts'

export { createPrisma, inTransaction, pgPoolOf, toBytes, LONG_TRANSACTION, type CreatePrismaOptions, type Db, type JsonInput } from './client.ts'
export { CopyBinaryColumnSink, CopyFormatError } from './copy-binary.ts'
export { StorageError, isStorageError, type StorageErrorCode } from './errors.ts'
export { computeContentHashes, type ContentHashes } from './hash.ts'
export * from './datasets.ts'
export * from './blobs.ts'
export * from './jobs.ts'
export * from './models.ts'
export * from './cache.ts'
export * from './deletes.ts'
export * from './idempotency.ts'
export {
  applyMigrations,
  readMigrations,
  migrationChecksum,
  MigrationError,
  PRISMA_MIGRATION_LOCK_ID,
  type MigrationFile,
  type ApplyMigrationsOptions,
} from './migrate.ts'
