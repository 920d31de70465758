// Which model answers a request: an explicit version, or the active one of a dataset.
import type { LoadedModel } from '@iisan/pipeline'
import { ApiError } from '@iisan/http'
import type { Deps } from './deps.ts'

export async function resolveModel(deps: Deps, modelId?: string, datasetId?: string): Promise<LoadedModel> {
  if (modelId) {
    const model = await deps.registry.get(modelId)
    if (!model) throw new ApiError(404, 'MODEL_NOT_FOUND', `model version ${modelId} not found`)
    if (datasetId && model.datasetId !== datasetId) throw new ApiError(400, 'VALIDATION_FAILED', `model ${modelId} belongs to another dataset`)
    return model
  }
  let active = deps.registry.activeModelIds()
  if (active.size === 0 || (datasetId && !active.has(datasetId))) {
    // An activation announcement may not have arrived yet: ask Postgres before saying no.
    await deps.registry.refreshActive()
    active = deps.registry.activeModelIds()
  }
  let id: string | undefined
  if (datasetId) id = active.get(datasetId)
  else if (active.size > 1) throw new ApiError(400, 'DATASET_REQUIRED', 'several datasets have an active model: give datasetId or modelId', { datasetIds: [...active.keys()] })
  else id = [...active.values()][0]
  if (!id) {
    if (datasetId && !(await deps.prisma.dataset.findUnique({ where: { id: datasetId }, select: { id: true } }))) {
      throw new ApiError(404, 'NOT_FOUND', `dataset ${datasetId} not found`)
    }
    throw new ApiError(409, 'NO_ACTIVE_MODEL', datasetId ? `dataset ${datasetId} has no active model` : 'no model is active yet: train one and activate it')
  }
  const model = await deps.registry.get(id)
  if (!model) throw new ApiError(409, 'NO_ACTIVE_MODEL', `active model ${id} is gone`)
  return model
}

/** The dataset's active model, or null when it has none (yet). */
export async function activeModelOf(deps: Deps, datasetId: string): Promise<LoadedModel | null> {
  try {
    return await resolveModel(deps, undefined, datasetId)
  } catch (e) {
    if (e instanceof ApiError && e.code === 'NO_ACTIVE_MODEL') return null
    throw e
  }
}
