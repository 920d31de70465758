import { readFileSync } from 'node:fs'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { DataFormatError, buildProtocol, parseItemsTsv, parseUsersTsv, protocolFromTsv } from '@iisan/model'

const SCIENTIFIC = path.resolve(process.cwd(), 'data/scientific')

describe('TSV parsing', () => {
  it('names the offending line', () => {
    expect(() => parseItemsTsv('A\tok\nB no tab here\n')).toThrowError(/items\.tsv line 2/)
    expect(() => parseItemsTsv('A\tx\nA\ty')).toThrowError(/line 2: duplicate item id A/)
    expect(() => parseItemsTsv('A\tx\nB\ty\timg.png\textra')).toThrowError(/line 2: expected at most 3/)
    // the optional third column is the item's image
    expect(parseItemsTsv('A\tx\nB\ty\timages/b.png\n')).toEqual([{ externalId: 'A', title: 'x' }, { externalId: 'B', title: 'y', imageRef: 'images/b.png' }])
    expect(() => parseUsersTsv('u1\tA B\nu2\tA Z', new Set(['A', 'B']))).toThrowError(/users\.tsv line 2: unknown item id Z/)
    expect(() => parseUsersTsv('u1\t   ')).toThrow(DataFormatError)
    expect(() => parseUsersTsv('u1\tA\n\nu2\t  ')).toThrowError(/users\.tsv line 3: user has no interactions/)
  })
})

describe('data protocol (docs/METHOD.md §6)', () => {
  it('filters, truncates to the last T+3 items, re-indexes and splits leave-one-out', () => {
    const catalogue = ['x', 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm', 'n', 'o', 'z']
    const users = [
      // 15 interactions: the first two (o, n) fall outside the last T+3 = 13 and n occurs nowhere else
      { key: 'long', items: ['o', 'n', 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm'] },
      { key: 'short', items: ['z', 'a', 'b', 'c'] }, // 4 < 5 interactions: dropped, so z disappears
      { key: 'five', items: ['b', 'a', 'b', 'o', 'x'] },
    ]
    const data = buildProtocol(users, catalogue, { maxSeqLen: 10, minInteractions: 5 })
    // kept items, in catalogue order: x a b c d e f g h i j k l m o  (n and z dropped)
    expect(data.itemKeys.slice(1)).toEqual(['x', 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm', 'o'])
    expect(data.stats).toMatchObject({ usersIn: 3, usersKept: 2, itemsKept: 15, interactionsKept: 18 })
    const id = (k: string) => data.itemKeys.indexOf(k)
    // user "long": kept a..m (13); train = a..k (11 = T+1), validation target l, test target m
    expect(Array.from(data.trainWindows[0])).toEqual(['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k'].map(id))
    expect(data.validation[0].target).toBe(id('l'))
    expect(Array.from(data.validation[0].window)).toEqual(['b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k'].map(id))
    expect(data.test[0].target).toBe(id('m'))
    expect(Array.from(data.test[0].window)).toEqual(['c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l'].map(id))
    // user "five": train b a b (left-padded to 11), validation predicts o from b a b, test predicts x
    expect(Array.from(data.trainWindows[1])).toEqual([0, 0, 0, 0, 0, 0, 0, 0, id('b'), id('a'), id('b')])
    expect(Array.from(data.validation[1].window)).toEqual([0, 0, 0, 0, 0, 0, 0, id('b'), id('a'), id('b')])
    expect(data.validation[1].target).toBe(id('o'))
    expect(new Set(data.test[1].history)).toEqual(new Set([id('b'), id('a'), id('o')]))
    expect(data.test[1].target).toBe(id('x'))
    // popularity counts come from the training parts only: b twice for "five", once for "long"
    expect(data.trainCounts[id('b')]).toBe(3)
    expect(data.trainCounts[id('l')]).toBe(0)
  })

  it('on a slice of the real Scientific files matches an independent count', () => {
    const itemsTsv = readFileSync(path.join(SCIENTIFIC, 'items.tsv'), 'utf8')
    const userLines = readFileSync(path.join(SCIENTIFIC, 'users.tsv'), 'utf8').split('\n').slice(0, 300)
    const { data } = protocolFromTsv(itemsTsv, userLines.join('\n'))

    // Independent expectation: straight from the lines, with the spec's rules written out here.
    const kept = userLines
      .map((l) => l.split('\t'))
      .filter(([, seq]) => seq && seq.trim().split(' ').length >= 5)
      .map(([user, seq]) => ({ user, items: seq.trim().split(' ').slice(-13) }))
    const distinctItems = new Set(kept.flatMap((u) => u.items))
    expect(data.stats.usersKept).toBe(kept.length)
    expect(data.stats.itemsKept).toBe(distinctItems.size)
    expect(data.stats.interactionsKept).toBe(kept.reduce((s, u) => s + u.items.length, 0))

    // First line of users.tsv: A0096681Y127OL1H8W3U  B0098MLBAO B0098MLBAO B00E8JOCOE B00S730YWG B0098MLBAO
    const u = data.userKeys.indexOf('A0096681Y127OL1H8W3U')
    const key = (i: number) => data.itemKeys[i]
    expect(Array.from(data.trainWindows[u]).filter(Boolean).map(key)).toEqual(['B0098MLBAO', 'B0098MLBAO', 'B00E8JOCOE'])
    expect(key(data.validation[u].target)).toBe('B00S730YWG')
    expect(key(data.test[u].target)).toBe('B0098MLBAO')
    // The test target was bought before: it is in the history, so it can never be recommended.
    expect(Array.from(data.test[u].history).map(key)).toContain('B0098MLBAO')
  })

  it('reproduces the README statistics on the full Scientific data', () => {
    const usersTsv = readFileSync(path.join(SCIENTIFIC, 'users.tsv'), 'utf8')
    const { data } = protocolFromTsv(readFileSync(path.join(SCIENTIFIC, 'items.tsv'), 'utf8'), usersTsv)
    // Independent count, straight from the file: every user has ≥ 5 interactions (dataset card),
    // so all are kept, each with their last 13 items.
    const lines = usersTsv.split('\n').filter(Boolean).map((l) => l.split('\t')[1].split(' '))
    const kept = lines.filter((items) => items.length >= 5).map((items) => items.slice(-13))
    expect(data.stats.usersKept).toBe(kept.length)
    expect(data.stats.itemsKept).toBe(new Set(kept.flat()).size)
    expect(data.stats.interactionsKept).toBe(kept.reduce((n, items) => n + items.length, 0))
    // …and the figures the README reports
    expect([data.stats.usersKept, data.stats.itemsKept, data.stats.interactionsKept]).toEqual([12076, 20314, 81711])
    expect(data.test).toHaveLength(12076)
  })
})
