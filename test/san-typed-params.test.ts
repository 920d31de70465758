// The SAN's parameters as typed fields (packages/model/src/san.ts): each field is the store's
// variable under its checkpoint name, created in the order that fixes its initialisation seed.
import { beforeAll, describe, expect, it } from 'vitest'
import { Params, addLinear, addSanb, addTower, initBackend, tf } from '@iisan/model'

beforeAll(async () => {
  await initBackend({ prefer: 'wasm' })
})

const groups = { gate: 'recsys', sanbs: 'imageAdapters', F: 'imageEncoder' } as const

describe('typed SAN parameters', () => {
  it('a tower holds the store’s variables, named and created as checkpoints expect', () => {
    const params = new Params(3)
    const tower = addTower(params, { name: 't', width: 4, numSideLayers: 2, reduction: 2, groups, xavierP: true }, 3)
    const names = params.entries().map(([name]) => name)
    const sanbNames = (k: number) => ['down.w', 'down.b', 'up.w', 'up.b'].map((p) => `t.sanb${k}.${p}`)
    expect(names).toEqual(['t.gate', ...sanbNames(0), ...sanbNames(1), 't.F.w', 't.F.b', 't.P.w', 't.P.b'])
    const stored = (variables: tf.Variable[], names: string[]) => variables.forEach((v, i) => expect(v).toBe(params.get(names[i])))
    stored([tower.gate], ['t.gate'])
    tower.sanbs.forEach((block, k) => {
      stored([block.down, block.downBias, block.up, block.upBias], sanbNames(k))
      expect(block.down.shape).toEqual([4, 2])
      expect(block.upBias.shape).toEqual([4])
    })
    stored([tower.F.w, tower.F.b, tower.P.w, tower.P.b], ['t.F.w', 't.F.b', 't.P.w', 't.P.b'])
    expect(tower.P.w.shape).toEqual([4, 3])
    // xavierP: P's bias starts at zero; F keeps nn.Linear's default (both non-zero)
    expect(Array.from(tower.P.b.dataSync())).toEqual([0, 0, 0])
    expect(Array.from(tower.F.b.dataSync()).some((v) => v !== 0)).toBe(true)
    expect(params.namesByGroup()).toEqual({ imageEncoder: ['t.F.w', 't.F.b'], imageAdapters: [...sanbNames(0), ...sanbNames(1)], recsys: ['t.gate', 't.P.w', 't.P.b'] })
    params.dispose()
  })

  it('addLinear takes one initialiser for both, or one each', () => {
    const params = new Params(1)
    const a = addLinear(params, 'a', [2, 3], 'ones', 'recsys')
    const b = addLinear(params, 'b', [2, 3], { w: 'ones', b: 'zeros' }, 'recsys')
    expect(params.entries().map(([n, v]) => `${n} ${v.shape.join('x')}`)).toEqual(['a.w 2x3', 'a.b 3', 'b.w 2x3', 'b.b 3'])
    expect(Array.from(a.b.dataSync())).toEqual([1, 1, 1])
    expect(Array.from(b.b.dataSync())).toEqual([0, 0, 0])
    params.dispose()
  })
})
