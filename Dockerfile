# One image for every service (api, worker, embedding-cache) and the one-shot `migrate` job;
# docker-compose.yml picks the command. Build: docker build -t iisan-platform .
#
# Build args:
#   NPM_CI_FLAGS   extra flags for `npm ci`, e.g. "--omit=optional" to skip @tensorflow/tfjs-node(-gpu)
#                  (their install downloads libtensorflow; without them training runs on tfjs-wasm).
ARG NODE_VERSION=20.20

# --- package manifests only, so the dependency layer is rebuilt only when they change (and .npmrc:
# it stops onnxruntime-node's postinstall downloading CUDA parts the image never uses)
FROM node:${NODE_VERSION}-bookworm-slim AS manifests
WORKDIR /app
COPY . .
RUN find . -type f ! -name package.json ! -name package-lock.json ! -name .npmrc -delete \
 && find . -type d -empty -delete

# --- runtime image
FROM node:${NODE_VERSION}-bookworm-slim
WORKDIR /app
ARG NPM_CI_FLAGS=""
# dev dependencies are needed at runtime too: the services run TypeScript through tsx and
# `npm run generate` uses the prisma CLI.
COPY --from=manifests /app ./
RUN npm ci --no-audit --no-fund ${NPM_CI_FLAGS} && npm cache clean --force
COPY . .
# Prisma 7 client generation needs no database and no native engine binary.
RUN npm run generate \
 && mkdir -p /app/artifacts \
 && chown -R node:node /app/artifacts

# HOST is the API's (and the worker health port's). The embedding cache binds
# EMBEDDING_CACHE_HOST, loopback unless set: a container that others must reach sets
# EMBEDDING_CACHE_HOST=0.0.0.0 and INTERNAL_TOKEN (required then), as docker-compose.yml does.
ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    PORT=3000 \
    EMBEDDING_CACHE_PORT=3001 \
    WORKER_HEALTH_PORT=3002 \
    ARTIFACTS_DIR=/app/artifacts
USER node
EXPOSE 3000 3001 3002
CMD ["npm", "run", "start:api"]
