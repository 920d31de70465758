import { beforeAll, describe, expect, it } from 'vitest'
import { SequentialRecommender, ServingModel, buildProtocol, initBackend, saveCheckpoint, sasRecIdConfig, tf, train } from '@iisan/model'

beforeAll(async () => {
  await initBackend({ prefer: 'wasm' })
})

/** 40 items on a cycle: every user walks i → i+1 → … from a different start. */
function cyclicData(numUsers: number, numItems = 40) {
  const users = Array.from({ length: numUsers }, (_, u) => ({
    key: `u${u}`,
    items: Array.from({ length: 8 }, (_, t) => `i${((u * 7 + t) % numItems) + 1}`),
  }))
  return buildProtocol(users, Array.from({ length: numItems }, (_, i) => `i${i + 1}`), { maxSeqLen: 5, minInteractions: 5 })
}

describe('ID-SASRec end to end on the training loop', () => {
  it('learns a deterministic next-item rule, and a checkpoint reloads to the same recommendations', async () => {
    const data = cyclicData(200)
    const model = new SequentialRecommender(sasRecIdConfig(data.numItems, { maxSeqLen: 5, embeddingDim: 32, seed: 7 }))
    const tensorsBefore = tf.memory().numTensors
    const epochs: number[] = []
    const result = await train(model, data, { maxEpochs: 12, batchSize: 32, lrItem: 5e-3, lrUser: 5e-3, patience: 12, seed: 1 }, {
      onEpoch: () => {
        epochs.push(tf.memory().numTensors)
      },
    })
    // No tensor survives a step or an evaluation (Adam's moments are the only growth, once),
    // and disposing the optimisers at the end returns to the parameters alone.
    expect(new Set(epochs).size).toBe(1)
    expect(tf.memory().numTensors).toBe(tensorsBefore)
    expect(result.test.hr10).toBeGreaterThanOrEqual(0.9)
    expect(result.epochs[result.epochs.length - 1].trainLoss).toBeLessThan(result.epochs[0].trainLoss)

    // Round trip: weights + item matrix → serving model → identical ranking.
    const serving = ServingModel.load(saveCheckpoint(model.params, model.config), result.itemMatrix)
    const history = Array.from(data.test[3].window).filter(Boolean)
    const fromCheckpoint = serving.recommend(history, 10)
    const matrix = tf.tensor2d(result.itemMatrix, [data.numItems + 1, 32])
    const direct = tf.tidy(() => tf.matMul(model.userStates([data.test[3].window], matrix), tf.transpose(matrix)).dataSync())
    matrix.dispose()
    const expectedOrder = Array.from({ length: data.numItems }, (_, i) => i + 1)
      .filter((i) => !history.includes(i))
      .sort((a, b) => direct[b] - direct[a])
      .slice(0, 10)
    expect(fromCheckpoint.map((r) => r.index)).toEqual(expectedOrder)
    expect(fromCheckpoint.every((r) => !history.includes(r.index))).toBe(true)
    serving.dispose()
    model.dispose()
  })

  it('random next items stay near chance', async () => {
    // Each user's sequence is drawn at random: nothing to learn beyond popularity.
    let seed = 3
    const rand = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648)
    const users = Array.from({ length: 200 }, (_, u) => ({ key: `u${u}`, items: Array.from({ length: 8 }, () => `i${1 + Math.floor(rand() * 40)}`) }))
    const data = buildProtocol(users, Array.from({ length: 40 }, (_, i) => `i${i + 1}`), { maxSeqLen: 5, minInteractions: 5 })
    const model = new SequentialRecommender(sasRecIdConfig(data.numItems, { maxSeqLen: 5, embeddingDim: 32, seed: 7 }))
    const result = await train(model, data, { maxEpochs: 6, batchSize: 32, lrItem: 5e-3, lrUser: 5e-3, patience: 6, seed: 1 })
    // chance with ~6 history items excluded from 40: 10 / 34 ≈ 0.29
    expect(result.test.hr10).toBeLessThan(0.5)
    model.dispose()
  })
})

describe('reproducibility', () => {
  it('the same seed gives the same training run (initialisation, shuffling and dropout masks)', async () => {
    const data = cyclicData(100)
    const run = async (seed: number) => {
      const model = new SequentialRecommender(sasRecIdConfig(data.numItems, { maxSeqLen: 5, embeddingDim: 16, seed }))
      const losses: number[] = []
      await train(model, data, { maxEpochs: 2, batchSize: 16, lrItem: 1e-3, lrUser: 1e-3, patience: 2, seed: 5 }, { onStep: (s) => void losses.push(s.loss) })
      model.dispose()
      return losses
    }
    const first = await run(11)
    expect(await run(11)).toEqual(first)
    expect(await run(12)).not.toEqual(first)
  })
})
