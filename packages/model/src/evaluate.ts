// Full-ranking evaluation (docs/METHOD.md §6): every user against all N items.
import * as tf from '@tensorflow/tfjs-core'
import type { EvalCase } from './data.ts'
import { RankingAccumulator, rankOfTarget, type RankingMetrics } from './metrics.ts'
import type { SequentialRecommender } from './recommender.ts'

const USERS_PER_CHUNK = 512

/**
 * itemMatrix [N+1, D] is computed once by the caller and shared by validation and test. Yields
 * to the event loop between chunks, so a worker's queue lock and progress keep flowing.
 */
export async function evaluateRanking(model: SequentialRecommender, cases: EvalCase[], itemMatrix: tf.Tensor2D): Promise<RankingMetrics> {
  const acc = new RankingAccumulator(10)
  const itemMatrixT = tf.transpose(itemMatrix) as tf.Tensor2D // [D, N+1], once: plain matMul is the fast path
  try {
    for (let start = 0; start < cases.length; start += USERS_PER_CHUNK) {
      const chunk = cases.slice(start, start + USERS_PER_CHUNK)
      const scores = tf.tidy(() => tf.matMul(model.userStates(chunk.map((c) => c.window), itemMatrix), itemMatrixT))
      const values = scores.dataSync() as Float32Array
      scores.dispose()
      const width = itemMatrix.shape[0]
      chunk.forEach((c, i) => acc.add(rankOfTarget(values.subarray(i * width, (i + 1) * width), c.target, c.history)))
      await new Promise((resolve) => setImmediate(resolve))
    }
  } finally {
    itemMatrixT.dispose()
  }
  return acc.result()
}
