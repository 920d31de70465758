-- CreateTable
CREATE TABLE "datasets" (
    "id" UUID NOT NULL,
    "name" TEXT NOT NULL,
    "description" TEXT,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "num_items" INTEGER NOT NULL DEFAULT 0,
    "num_users" INTEGER NOT NULL DEFAULT 0,
    "num_interactions" INTEGER NOT NULL DEFAULT 0,
    "stats" JSONB,

    CONSTRAINT "datasets_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "items" (
    "id" SERIAL NOT NULL,
    "dataset_id" UUID NOT NULL,
    "external_id" TEXT NOT NULL,
    "title" TEXT NOT NULL,
    "image_ref" TEXT,
    "image_blob" BYTEA,
    "image_mime" TEXT,
    "text_hash" TEXT NOT NULL,
    "image_hash" TEXT,
    "content_hash" TEXT NOT NULL,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "items_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "dataset_users" (
    "id" SERIAL NOT NULL,
    "dataset_id" UUID NOT NULL,
    "external_id" TEXT NOT NULL,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "dataset_users_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "interactions" (
    "id" SERIAL NOT NULL,
    "dataset_id" UUID NOT NULL,
    "user_id" INTEGER NOT NULL,
    "item_id" INTEGER NOT NULL,
    "position" INTEGER NOT NULL,
    "source" TEXT NOT NULL DEFAULT 'import',
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "interactions_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "backbones" (
    "id" SERIAL NOT NULL,
    "fingerprint" TEXT NOT NULL,
    "modality" TEXT NOT NULL,
    "model_type" TEXT NOT NULL,
    "name" TEXT,
    "num_layers" INTEGER NOT NULL,
    "hidden_size" INTEGER NOT NULL,
    "config" JSONB NOT NULL,
    "location" TEXT NOT NULL,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "backbones_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "hidden_states" (
    "backbone_id" INTEGER NOT NULL,
    "content_hash" TEXT NOT NULL,
    "dtype" TEXT NOT NULL,
    "layers" INTEGER NOT NULL,
    "dim" INTEGER NOT NULL,
    "data" BYTEA NOT NULL,
    "error" TEXT,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "hidden_states_pkey" PRIMARY KEY ("backbone_id","content_hash")
);

-- CreateTable
CREATE TABLE "cache_builds" (
    "id" UUID NOT NULL,
    "dataset_id" UUID NOT NULL,
    "backbone_id" INTEGER NOT NULL,
    "status" TEXT NOT NULL DEFAULT 'queued',
    "items_total" INTEGER NOT NULL DEFAULT 0,
    "items_done" INTEGER NOT NULL DEFAULT 0,
    "items_failed" INTEGER NOT NULL DEFAULT 0,
    "error" TEXT,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "started_at" TIMESTAMPTZ(3),
    "finished_at" TIMESTAMPTZ(3),

    CONSTRAINT "cache_builds_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "training_jobs" (
    "id" UUID NOT NULL,
    "dataset_id" UUID NOT NULL,
    "method" TEXT NOT NULL,
    "config" JSONB NOT NULL,
    "status" TEXT NOT NULL DEFAULT 'queued',
    "progress" JSONB,
    "error" TEXT,
    "cancel_requested" BOOLEAN NOT NULL DEFAULT false,
    "model_version_id" UUID,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "started_at" TIMESTAMPTZ(3),
    "finished_at" TIMESTAMPTZ(3),

    CONSTRAINT "training_jobs_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "epoch_metrics" (
    "id" SERIAL NOT NULL,
    "job_id" UUID NOT NULL,
    "epoch" INTEGER NOT NULL,
    "train_loss" DOUBLE PRECISION NOT NULL,
    "val_hr10" DOUBLE PRECISION NOT NULL,
    "val_ndcg10" DOUBLE PRECISION NOT NULL,
    "seconds" DOUBLE PRECISION NOT NULL,
    "extra" JSONB,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "epoch_metrics_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "model_versions" (
    "id" UUID NOT NULL,
    "dataset_id" UUID NOT NULL,
    "job_id" UUID,
    "method" TEXT NOT NULL,
    "config" JSONB NOT NULL,
    "weights" BYTEA NOT NULL,
    "item_embeddings" BYTEA NOT NULL,
    "item_index" JSONB NOT NULL,
    "embedding_dim" INTEGER NOT NULL,
    "num_items" INTEGER NOT NULL,
    "test_hr10" DOUBLE PRECISION,
    "test_ndcg10" DOUBLE PRECISION,
    "val_hr10" DOUBLE PRECISION,
    "val_ndcg10" DOUBLE PRECISION,
    "seconds_per_epoch" DOUBLE PRECISION,
    "peak_memory_mb" DOUBLE PRECISION,
    "trainable_params" INTEGER,
    "epochs" INTEGER,
    "metrics" JSONB,
    "is_active" BOOLEAN NOT NULL DEFAULT false,
    "activated_at" TIMESTAMPTZ(3),
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "model_versions_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE INDEX "datasets_created_at_idx" ON "datasets"("created_at");

-- CreateIndex
CREATE INDEX "items_content_hash_idx" ON "items"("content_hash");

-- CreateIndex
CREATE UNIQUE INDEX "items_dataset_id_external_id_key" ON "items"("dataset_id", "external_id");

-- CreateIndex
CREATE UNIQUE INDEX "dataset_users_dataset_id_external_id_key" ON "dataset_users"("dataset_id", "external_id");

-- CreateIndex
CREATE INDEX "interactions_dataset_id_idx" ON "interactions"("dataset_id");

-- CreateIndex
CREATE INDEX "interactions_item_id_idx" ON "interactions"("item_id");

-- CreateIndex
CREATE UNIQUE INDEX "interactions_user_id_position_key" ON "interactions"("user_id", "position");

-- CreateIndex
CREATE UNIQUE INDEX "backbones_fingerprint_key" ON "backbones"("fingerprint");

-- CreateIndex
CREATE INDEX "cache_builds_dataset_id_backbone_id_idx" ON "cache_builds"("dataset_id", "backbone_id");

-- CreateIndex
CREATE UNIQUE INDEX "training_jobs_model_version_id_key" ON "training_jobs"("model_version_id");

-- CreateIndex
CREATE INDEX "training_jobs_dataset_id_created_at_idx" ON "training_jobs"("dataset_id", "created_at");

-- CreateIndex
CREATE INDEX "training_jobs_status_idx" ON "training_jobs"("status");

-- CreateIndex
CREATE UNIQUE INDEX "epoch_metrics_job_id_epoch_key" ON "epoch_metrics"("job_id", "epoch");

-- CreateIndex
CREATE UNIQUE INDEX "model_versions_job_id_key" ON "model_versions"("job_id");

-- CreateIndex
CREATE INDEX "model_versions_dataset_id_created_at_idx" ON "model_versions"("dataset_id", "created_at");

-- CreateIndex
CREATE UNIQUE INDEX "model_versions_one_active_per_dataset" ON "model_versions"("dataset_id") WHERE ("is_active" = true);

-- AddForeignKey
ALTER TABLE "items" ADD CONSTRAINT "items_dataset_id_fkey" FOREIGN KEY ("dataset_id") REFERENCES "datasets"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "dataset_users" ADD CONSTRAINT "dataset_users_dataset_id_fkey" FOREIGN KEY ("dataset_id") REFERENCES "datasets"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "interactions" ADD CONSTRAINT "interactions_dataset_id_fkey" FOREIGN KEY ("dataset_id") REFERENCES "datasets"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "interactions" ADD CONSTRAINT "interactions_user_id_fkey" FOREIGN KEY ("user_id") REFERENCES "dataset_users"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "interactions" ADD CONSTRAINT "interactions_item_id_fkey" FOREIGN KEY ("item_id") REFERENCES "items"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "hidden_states" ADD CONSTRAINT "hidden_states_backbone_id_fkey" FOREIGN KEY ("backbone_id") REFERENCES "backbones"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "cache_builds" ADD CONSTRAINT "cache_builds_dataset_id_fkey" FOREIGN KEY ("dataset_id") REFERENCES "datasets"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "cache_builds" ADD CONSTRAINT "cache_builds_backbone_id_fkey" FOREIGN KEY ("backbone_id") REFERENCES "backbones"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "training_jobs" ADD CONSTRAINT "training_jobs_dataset_id_fkey" FOREIGN KEY ("dataset_id") REFERENCES "datasets"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "training_jobs" ADD CONSTRAINT "training_jobs_model_version_id_fkey" FOREIGN KEY ("model_version_id") REFERENCES "model_versions"("id") ON DELETE SET NULL ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "epoch_metrics" ADD CONSTRAINT "epoch_metrics_job_id_fkey" FOREIGN KEY ("job_id") REFERENCES "training_jobs"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "model_versions" ADD CONSTRAINT "model_versions_dataset_id_fkey" FOREIGN KEY ("dataset_id") REFERENCES "datasets"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "model_versions" ADD CONSTRAINT "model_versions_job_id_fkey" FOREIGN KEY ("job_id") REFERENCES "training_jobs"("id") ON DELETE SET NULL ON UPDATE CASCADE;
