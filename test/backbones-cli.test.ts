// `npm run backbone -- …` as a user runs it: a child process, JSON out, one-line errors.
import fs from 'node:fs'
import path from 'node:path'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { afterAll, describe, expect, it } from 'vitest'
import { fixtureDir, fixturePng, readExpected, tempDir, worstError, type BertExpected, type VitExpected } from './fixtures-gen/backbone-fixtures.ts'

const run = promisify(execFile)
const CLI = path.resolve(process.cwd(), 'packages/backbones/src/cli.ts')
const work = tempDir('cli')

afterAll(() => fs.rmSync(work, { recursive: true, force: true }))

async function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, ['--import', 'tsx', CLI, ...args], { maxBuffer: 64 << 20 })
    return { code: 0, stdout, stderr }
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string }
    return { code: e.code, stdout: e.stdout, stderr: e.stderr }
  }
}

interface CliOutput {
  model_type: string
  fingerprint: string
  input_ids?: number[][]
  cls_per_layer: number[][][]
}

describe('backbone CLI', () => {
  it('hidden-states --texts writes input ids and [CLS] per layer', async () => {
    const exp = readExpected<BertExpected>('bert-tiny-sharp')
    const texts = path.join(work, 'titles.txt')
    fs.writeFileSync(texts, `${exp.texts.join('\n')}\n`)
    const out = path.join(work, 'out', 'bert.json')
    const r = await cli(['hidden-states', '--model', fixtureDir('bert-tiny-sharp'), '--texts', texts, '--json', out])
    expect(r).toMatchObject({ code: 0, stderr: '' })
    const json = JSON.parse(fs.readFileSync(out, 'utf8')) as CliOutput
    expect(json.model_type).toBe('bert')
    expect(json.fingerprint).toMatch(/^[0-9a-f]{64}$/)
    expect(json.input_ids).toEqual(exp.input_ids)
    expect(worstError(json.cls_per_layer.flat(2), exp.cls_per_layer.flat(2))).toBeLessThanOrEqual(1e-4)
  })

  it('hidden-states --images prints JSON to stdout', async () => {
    const exp = readExpected<VitExpected>('vit-tiny-b')
    const files: string[] = []
    for (let i = 0; i < exp.images_u8_hwc.length; i++) {
      files.push(path.join(work, `img${i}.png`))
      fs.writeFileSync(files[i], await fixturePng(exp, i))
    }
    const r = await cli(['hidden-states', '--model', fixtureDir('vit-tiny-b'), '--weights', 'model.hubstyle.safetensors', '--images', ...files])
    expect(r.code).toBe(0)
    const json = JSON.parse(r.stdout) as CliOutput
    expect(json.model_type).toBe('vit')
    expect(json.input_ids).toBeUndefined()
    expect(worstError(json.cls_per_layer.flat(2), exp.cls_per_layer.flat(2))).toBeLessThanOrEqual(1e-4)
  })

  it.each([
    [['hidden-states', '--model', '/nonexistent/model', '--texts', '/dev/null'], 'backbone: backbone folder /nonexistent/model does not exist'],
    [['hidden-states', '--model', fixtureDir('bert-tiny-a'), '--texts', '/nonexistent/titles.txt'], 'backbone: cannot read texts file /nonexistent/titles.txt: ENOENT'],
    [['hidden-states', '--model', fixtureDir('vit-tiny-a'), '--images', '/nonexistent/a.png'], 'backbone: cannot read image /nonexistent/a.png: ENOENT'],
    [['hidden-states', '--model', fixtureDir('vit-tiny-a'), '--texts', '/dev/null'], 'backbone: --texts needs a BERT folder'],
    [['hidden-states', '--model', fixtureDir('bert-tiny-a')], 'backbone: give exactly one of --texts FILE or --images FILE...'],
  ])('fails with one clear line: %j', async (args, message) => {
    const r = await cli(args)
    expect(r.code).toBe(1)
    expect(r.stdout).toBe('')
    expect(r.stderr.split('\n')[0]).toContain(message)
    expect(r.stderr).not.toMatch(/\n\s+at /)
  })

  it('make-default writes the demo pair and is idempotent', async () => {
    const out = path.join(work, 'backbones')
    const first = await cli(['make-default', '--out', out])
    expect(first.code).toBe(0)
    const second = await cli(['make-default', '--out', out])
    expect(second.stdout).toBe(first.stdout)
    expect(fs.readdirSync(out).sort()).toEqual(['demo-bert', 'demo-vit'])
  })
})
