# The base image by tag. To pin it (reproducible builds), append the digest the tag points to today:
#   docker buildx imagetools inspect node:20-bookworm-slim    (the "Digest:" line)
#   FROM node:20-bookworm-slim@sha256:<digest> AS build        (and the same in the second FROM)
# and bump it deliberately (e.g. with Dependabot or Renovate) to pick up security fixes.
# .ci/image-check.mjs reproduces the runtime stage without Docker; keep it in step.

# Build: compile TypeScript to dist/, bundle the web console into dist/console.
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY gen ./gen
COPY src ./src
COPY console ./console
RUN npm run build && npm run build:console

# Run: production dependencies and compiled code only, as the unprivileged node user.
# Operators mint tokens and migrate with `docker exec <container> npm run -s token -- alice` and
# `npm run migrate` (bin/run.js runs dist/ when tsx, a dev dependency, is absent).
FROM node:20-bookworm-slim
ENV NODE_ENV=production HOST=0.0.0.0 PORT=8080 GRPC_PORT=50051 DATA_DIR=/data
# Buffers of 128 KiB and more (file chunks) go back to the system when freed; glibc's adaptive
# threshold would keep them after the first burst (README, "Memory after abuse").
ENV MALLOC_MMAP_THRESHOLD_=131072
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force
COPY bin ./bin
COPY --from=build /app/dist ./dist
RUN mkdir -p /data && chown node:node /data
USER node
VOLUME /data
EXPOSE 8080 50051
STOPSIGNAL SIGTERM
# The slim image has no curl: node asks /healthz itself.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 CMD ["node", "-e", "fetch('http://127.0.0.1:' + process.env.PORT + '/healthz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# Two V8 worker threads, not four: each keeps tens of MB from compiling PGlite (README, Benchmarks).
CMD ["node", "--v8-pool-size=2", "dist/src/main.js"]
