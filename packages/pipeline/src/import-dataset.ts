// Dataset import from the two TSV files (IISAN_SPEC §6 format) into Postgres, all or nothing.
import { decodeHTML } from 'entities'
import { parseItemsTsv, parseUsersTsv } from '@iisan/model/data'
import { importDataset, type PrismaClient } from '@iisan/storage'

export interface TsvImport {
  name: string
  description?: string
  itemsTsv: string
  usersTsv: string
}

/** Parses (DataFormatError names the line) and imports in one transaction. */
export async function importDatasetFromTsv(prisma: PrismaClient, input: TsvImport) {
  // Scraped catalogues carry HTML entities (Scientific: "&amp;", "&quot;"); titles are shown to
  // people and read by the text backbone, so store them decoded.
  const items = parseItemsTsv(input.itemsTsv).map((item) => ({ ...item, title: decodeHTML(item.title) }))
  const users = parseUsersTsv(input.usersTsv, new Set(items.map((i) => i.externalId)))
  return importDataset(prisma, { name: input.name, description: input.description ?? null, items, users })
}
