-- AlterTable
ALTER TABLE "training_checkpoints" ADD COLUMN     "generation" UUID,
ADD COLUMN     "part_count" INTEGER,
ADD COLUMN     "state_bytes" BIGINT,
ADD COLUMN     "state_sha256" TEXT,
ALTER COLUMN "state" DROP NOT NULL;

-- CreateTable
CREATE TABLE "training_checkpoint_parts" (
    "job_id" UUID NOT NULL,
    "generation" UUID NOT NULL,
    "part" INTEGER NOT NULL,
    "bytes" BYTEA NOT NULL,

    CONSTRAINT "training_checkpoint_parts_pkey" PRIMARY KEY ("job_id","generation","part")
);

-- AddForeignKey
ALTER TABLE "training_checkpoint_parts" ADD CONSTRAINT "training_checkpoint_parts_job_id_fkey" FOREIGN KEY ("job_id") REFERENCES "training_jobs"("id") ON DELETE CASCADE ON UPDATE CASCADE;
