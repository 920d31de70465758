/**
 * Model versions stored directly with the figures a test wants to compare (time, memory,
 * parameters, metrics) and no trained weights: enough for listing and comparing, not for serving
 * (quick-api.ts's untrainedModelVersion makes loadable ones).
 */
import { createModelVersion, type CreateModelVersionInput, type PrismaClient } from '@iisan/storage'

export type MeasuredFigures = Pick<CreateModelVersionInput, 'method' | 'secondsPerEpoch' | 'peakMemoryMb' | 'trainableParams' | 'testHr10' | 'testNdcg10' | 'epochs'>

export async function measuredModelVersion(prisma: PrismaClient, datasetId: string, figures: MeasuredFigures) {
  const D = 2
  const items = await prisma.item.findMany({ where: { datasetId }, orderBy: { id: 'asc' }, select: { id: true } })
  return createModelVersion(prisma, {
    datasetId,
    config: {},
    weights: new Uint8Array(),
    itemEmbeddings: new Float32Array(items.length * D),
    itemIndex: items.map((i) => i.id),
    embeddingDim: D,
    ...figures,
  })
}
