// The demo text backbone on a catalogue it was not built from. Its vocabulary used to come from
// Scientific's titles, so a musical-instrument catalogue's words ("guitar", "strings", "cymbal")
// fell apart into single characters: a title ran past the 28 pieces a title keeps before its
// distinguishing words, and string sets that differ only in gauge got identical states (cosine
// 1.000). With bert-base-uncased's full WordPiece vocabulary every English title tokenises into
// words, and different titles differ.
import fs from 'node:fs'
import path from 'node:path'
import { createHash } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ensureDefaultBackbones, fingerprintBackbone, loadTextBackbone, readModelConfig, type TextBackbone } from '@iisan/backbones'
import { demoVocabText } from '@iisan/backbones/default'
import { isDemoBackboneDir, isDemoModelConfig } from '@iisan/backbones/demo'
import { fixtureDir, tempDir } from './fixtures-gen/backbone-fixtures.ts'

const MUSICAL_INSTRUMENTS = [
  'Fender Player Stratocaster Electric Guitar, Maple Fingerboard, Polar White',
  'Yamaha FG800 Solid Top Acoustic Guitar, Natural',
  // string sets that differ late in the title: identical under the old vocabulary
  'Ernie Ball Super Slinky Nickel Wound Electric Guitar Strings, 9-42 Gauge',
  'Ernie Ball Regular Slinky Nickel Wound Electric Guitar Strings, 10-46 Gauge',
  "D'Addario EXL110 Nickel Wound Electric Guitar Strings, Regular Light, 10-46",
  "D'Addario EXL120 Nickel Wound Electric Guitar Strings, Super Light, 9-42",
  'Elixir Strings Electric Guitar Strings with NANOWEB Coating, Light (.010-.046)',
  'Elixir Strings Electric Guitar Strings with NANOWEB Coating, Super Light (.009-.042)',
  'Martin Guitar Authentic Acoustic Lifespan 2.0 Guitar Strings, 92/8 Phosphor Bronze',
  'Zildjian A Custom 16 inch Crash Cymbal, Brilliant Finish',
  'Sabian B8X 18 inch Ride Cymbal',
  'Meinl Cymbals HCS 14 inch Hihat Cymbal Pair',
  'Pearl Roadshow 5-Piece Complete Drum Set with Cymbals and Hardware, Jet Black',
  'Vic Firth American Classic 5A Drumsticks, Hickory, Wood Tip',
  'Remo Ambassador Coated Snare Drum Head, 14 inch',
  'Ludwig Breakbeats 4-Piece Shell Pack by Questlove, Azure Sparkle',
  'Yamaha P-45 88-Key Weighted Action Digital Piano',
  'Casio CT-S300 61-Key Portable Keyboard with Touch Sensitive Keys',
  'Roland FP-30X Digital Piano with Bluetooth, Black',
  'M-Audio Keystation 49 MK3 USB MIDI Keyboard Controller',
  'Shure SM58 Cardioid Dynamic Vocal Microphone',
  'Audio-Technica AT2020 Cardioid Condenser Studio XLR Microphone',
  'Focusrite Scarlett 2i2 3rd Gen USB Audio Interface for Recording',
  'Boss DS-1 Distortion Guitar Effects Pedal',
  'Electro-Harmonix Big Muff Pi Fuzz Pedal',
  'Fender Frontman 10G Electric Guitar Amplifier, 10 Watts',
  'Marshall MG15G 15-Watt Guitar Combo Amp',
  'Hohner Special 20 Harmonica, Key of C',
  'Stentor Student II Violin Outfit, 4/4 Full Size, with Bow and Case',
  'Eastar Violin for Beginners with Rosin, Shoulder Rest and Extra Strings',
  'Kala KA-15S Mahogany Soprano Ukulele with Gig Bag',
  'Snark SN-5 Clip-On Tuner for Guitar, Bass and Violin',
  'Gator Cases Padded Nylon Gig Bag for Electric Bass Guitars',
  'Korg TM60 Combo Tuner and Metronome, Black',
  'Planet Waves Auto Lock Guitar Strap, Black Leather',
]

/** Titles made only of common English words: no piece of them may be [UNK]. */
const PLAIN_ENGLISH = [
  'Wooden music stand for a small orchestra',
  'Soft case with a shoulder strap and two pockets',
  'Replacement strings for an old classical guitar',
  'Brass trumpet with a silver mouthpiece and cleaning kit',
  'Folding stool for drummers, black, adjustable height',
]

const roots: string[] = []
let text: TextBackbone
let textDir: string
beforeAll(async () => {
  const root = tempDir('demo-vocab')
  roots.push(root)
  textDir = (await ensureDefaultBackbones(root)).text
  text = await loadTextBackbone(textDir)
})
afterAll(() => {
  text?.dispose()
  for (const d of roots) fs.rmSync(d, { recursive: true, force: true })
})

const cosine = (a: Float32Array, b: Float32Array): number => {
  let ab = 0
  let aa = 0
  let bb = 0
  for (let i = 0; i < a.length; i++) {
    ab += a[i] * b[i]
    aa += a[i] * a[i]
    bb += b[i] * b[i]
  }
  return ab / Math.sqrt(aa * bb)
}

describe('the demo text backbone vocabulary', () => {
  it("is bert-base-uncased's vocab.txt, byte for byte", () => {
    const vocab = demoVocabText()
    const lines = vocab.split('\n')
    expect(lines.pop()).toBe('')
    expect(lines).toHaveLength(30522)
    expect(lines.slice(0, 2)).toEqual(['[PAD]', '[unused0]'])
    expect(lines.indexOf('[UNK]')).toBe(100)
    expect(lines.indexOf('the')).toBe(1996)
    // the same file as the bert-tiny fixtures', which carry bert-base-uncased's vocabulary
    const sha = (s: string | Buffer) => createHash('sha256').update(s).digest('hex')
    expect(sha(vocab)).toBe(sha(fs.readFileSync(path.join(fixtureDir('bert-tiny-a'), 'vocab.txt'))))
    expect(fs.readFileSync(path.join(textDir, 'vocab.txt'), 'utf8')).toBe(vocab)
    expect(readModelConfig(textDir)).toMatchObject({ modelType: 'bert', vocabSize: 30522, numLayers: 4, hiddenSize: 64 })
  })

  it('tokenises an unseen catalogue and common English without [UNK]', () => {
    const unk = text.tokenizer.encodePieces('[UNK]')
    expect(unk).toEqual([100])
    for (const title of [...PLAIN_ENGLISH, ...MUSICAL_INSTRUMENTS]) {
      const pieces = text.tokenizer.encodePieces(title)
      expect(pieces.length, title).toBeGreaterThan(0)
      expect(pieces, title).not.toContain(100)
    }
    // whole words now, not characters
    for (const word of ['guitar', 'strings', 'violin', 'drum']) expect(text.tokenizer.encodePieces(word), word).toHaveLength(1)
  })

  it('gives different musical-instrument titles distinct states (max cosine < 0.999)', async () => {
    const titles = [...MUSICAL_INSTRUMENTS, ...PLAIN_ENGLISH]
    expect(new Set(titles).size).toBe(titles.length)
    const enc = await text.encodeTexts(titles)
    const L1 = enc.numLayers + 1
    const d = enc.hiddenSize
    // layer 0 at [CLS] is the same embedding for every input by construction; the layers above read the title
    const states = titles.map((_, i) => enc.clsPerLayer.slice((i * L1 + 1) * d, (i + 1) * L1 * d))
    const last = titles.map((_, i) => enc.clsPerLayer.slice((i * L1 + L1 - 1) * d, (i + 1) * L1 * d))
    let worst = { cos: -1, pair: '' }
    let worstLast = -1
    for (let i = 0; i < titles.length; i++) {
      for (let j = i + 1; j < titles.length; j++) {
        const c = cosine(states[i], states[j])
        if (c > worst.cos) worst = { cos: c, pair: `${titles[i]} | ${titles[j]}` }
        worstLast = Math.max(worstLast, cosine(last[i], last[j]))
      }
    }
    expect(worst.cos, worst.pair).toBeLessThan(0.999)
    expect(worstLast).toBeLessThan(0.999)
  })

  it('keeps the words that tell string sets apart within the 28 pieces of a title', () => {
    const strings = MUSICAL_INSTRUMENTS.filter((t) => /Strings/.test(t))
    expect(strings.length).toBeGreaterThanOrEqual(5)
    for (const title of strings) expect(text.tokenizer.encodePieces(title).length, title).toBeLessThanOrEqual(28)
    const ids = text.tokenize(strings).inputIds
    const rows = strings.map((_, i) => Array.from(ids.subarray(i * 30, (i + 1) * 30)).join(','))
    expect(new Set(rows).size).toBe(strings.length)
  })

  it('carries the demo marker, which real checkpoints do not', () => {
    expect(isDemoBackboneDir(textDir)).toBe(true)
    expect(isDemoModelConfig(text.config)).toBe(true)
    expect(isDemoBackboneDir(fixtureDir('bert-tiny-a'))).toBe(false)
    expect(isDemoModelConfig(readModelConfig(fixtureDir('bert-tiny-a')))).toBe(false)
    // the marker is part of what the fingerprint covers: a fresh cache key, never shared with a real model
    expect(text.fingerprint).toBe(fingerprintBackbone(textDir))
  })
})
