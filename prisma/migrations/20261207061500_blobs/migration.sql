-- Large binary values (checkpoint states, model weights) move to blobs stored in parts. Existing
-- values are carried over: a checkpoint's parts become its blob's parts, and a value stored in one
-- column (a model version's weights, a checkpoint saved before parts) becomes a blob of one part.

-- CreateTable
CREATE TABLE "blobs" (
    "id" UUID NOT NULL,
    "byte_length" BIGINT NOT NULL,
    "part_count" INTEGER NOT NULL,
    "sha256" TEXT,
    "sealed_at" TIMESTAMPTZ(3),
    "touched_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "blobs_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "blob_parts" (
    "blob_id" UUID NOT NULL,
    "part" INTEGER NOT NULL,
    "bytes" BYTEA NOT NULL,

    CONSTRAINT "blob_parts_pkey" PRIMARY KEY ("blob_id","part")
);

-- AddForeignKey
ALTER TABLE "blob_parts" ADD CONSTRAINT "blob_parts_blob_id_fkey" FOREIGN KEY ("blob_id") REFERENCES "blobs"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- Checkpoints: one saved in the single column becomes one part; one with neither could not be read
UPDATE "training_checkpoints"
SET "generation" = gen_random_uuid(), "state_bytes" = octet_length("state"), "part_count" = 1, "state_sha256" = encode(sha256("state"), 'hex')
WHERE "generation" IS NULL AND "state" IS NOT NULL;
DELETE FROM "training_checkpoints" WHERE "generation" IS NULL;
INSERT INTO "blobs" ("id", "byte_length", "part_count", "sha256", "sealed_at", "touched_at")
SELECT "generation", "state_bytes", "part_count", "state_sha256", "updated_at", "updated_at" FROM "training_checkpoints";
INSERT INTO "blob_parts" ("blob_id", "part", "bytes")
SELECT "generation", 0, "state" FROM "training_checkpoints" WHERE "state" IS NOT NULL;
INSERT INTO "blob_parts" ("blob_id", "part", "bytes")
SELECT p."generation", p."part", p."bytes" FROM "training_checkpoint_parts" p
JOIN "training_checkpoints" c ON c."job_id" = p."job_id" AND c."generation" = p."generation";

ALTER TABLE "training_checkpoints" RENAME COLUMN "generation" TO "state_blob_id";
ALTER TABLE "training_checkpoints" ALTER COLUMN "state_blob_id" SET NOT NULL,
DROP COLUMN "part_count",
DROP COLUMN "state",
DROP COLUMN "state_bytes",
DROP COLUMN "state_sha256";

-- DropTable
DROP TABLE "training_checkpoint_parts";

-- Model versions: the weights become a blob of one part
ALTER TABLE "model_versions" ADD COLUMN "weights_blob_id" UUID;
UPDATE "model_versions" SET "weights_blob_id" = gen_random_uuid();
INSERT INTO "blobs" ("id", "byte_length", "part_count", "sha256", "sealed_at", "touched_at")
SELECT "weights_blob_id", octet_length("weights"), 1, encode(sha256("weights"), 'hex'), "created_at", "created_at" FROM "model_versions";
INSERT INTO "blob_parts" ("blob_id", "part", "bytes") SELECT "weights_blob_id", 0, "weights" FROM "model_versions";
ALTER TABLE "model_versions" ALTER COLUMN "weights_blob_id" SET NOT NULL, DROP COLUMN "weights";

-- CreateIndex
CREATE UNIQUE INDEX "model_versions_weights_blob_id_key" ON "model_versions"("weights_blob_id");

-- CreateIndex
CREATE UNIQUE INDEX "training_checkpoints_state_blob_id_key" ON "training_checkpoints"("state_blob_id");

-- AddForeignKey
ALTER TABLE "training_checkpoints" ADD CONSTRAINT "training_checkpoints_state_blob_id_fkey" FOREIGN KEY ("state_blob_id") REFERENCES "blobs"("id") ON DELETE RESTRICT ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "model_versions" ADD CONSTRAINT "model_versions_weights_blob_id_fkey" FOREIGN KEY ("weights_blob_id") REFERENCES "blobs"("id") ON DELETE RESTRICT ON UPDATE CASCADE;

-- A row that refers to a blob owns it: the blob goes with the row, however the row goes (its own
-- delete, or a cascade from its dataset or job). TG_ARGV[0] names the column holding the blob's id.
CREATE FUNCTION "delete_owned_blob"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM "blobs" WHERE "id" = (to_jsonb(OLD) ->> TG_ARGV[0])::uuid;
  RETURN NULL;
END
$$;

CREATE TRIGGER "training_checkpoints_delete_state_blob" AFTER DELETE ON "training_checkpoints"
FOR EACH ROW EXECUTE FUNCTION "delete_owned_blob"('state_blob_id');

CREATE TRIGGER "model_versions_delete_weights_blob" AFTER DELETE ON "model_versions"
FOR EACH ROW EXECUTE FUNCTION "delete_owned_blob"('weights_blob_id');
