// Prisma 7 configuration (the connection URL no longer lives in schema.prisma).
// `prisma generate` does not need a database; the URL only matters for the CLI's migrate/db
// commands on machines that have Prisma's native schema engine. On the build machines use
// `npm run db:migrate` / `npm run db:diff` instead (see scripts/migrate*.ts).
import { defineConfig } from 'prisma/config'

export default defineConfig({
  schema: 'prisma/schema.prisma',
  migrations: { path: 'prisma/migrations' },
  datasource: {
    url: process.env.DATABASE_URL ?? 'postgresql://postgres@127.0.0.1:5432/iisan',
  },
})
