# pcoip-lb container image. Build:  docker build -t pcoip-lb .
#
# The image has NO usable config: mount yours at /etc/pcoip-lb/pcoip-lb.yaml (README "Docker").
#   docker run --rm --stop-timeout 30 --sysctl net.ipv4.ip_unprivileged_port_start=0 \
#     -p 443:443/tcp -p 4172:4172/tcp -p 4172:4172/udp \
#     -v /etc/pcoip-lb/pcoip-lb.yaml:/etc/pcoip-lb/pcoip-lb.yaml:ro pcoip-lb
# --stop-timeout (compose: stop_grace_period) must exceed the config's shutdown.grace (default
# 10s), or `docker stop` kills the proxy before open sessions had their grace period. A Dockerfile
# cannot set it; deploy/docker/compose.yaml shows it.

# --- dependencies: only package*.json, so this layer is rebuilt only when they change ----------
FROM node:24-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
# --ignore-scripts: `prepare` (the build) needs src/, which comes in the next stage.
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund

# --- build: dev dependencies + sources -> dist/ -----------------------------------------------
FROM node:24-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build

# --- runtime: node, the production dependencies and dist/; no npm ------------------------------
FROM node:24-slim
LABEL org.opencontainers.image.title="pcoip-lb" \
      org.opencontainers.image.description="Load-balancing proxy for HP Anyware (PCoIP) Connector pools: one affinity record per client across 443, 4172/TCP and 4172/UDP" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.documentation="README.md (Docker), deploy/"
# npm, npx, corepack and yarn are not needed to run the proxy: fewer tools, fewer CVEs to patch.
RUN rm -rf /usr/local/lib/node_modules/npm /usr/local/lib/node_modules/corepack \
      /usr/local/bin/npm /usr/local/bin/npx /usr/local/bin/corepack \
      /opt/yarn-* /usr/local/bin/yarn /usr/local/bin/yarnpkg
ENV NODE_ENV=production \
    PCOIP_LB_LIVEZ_URL=http://127.0.0.1:8404/livez
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json ./
COPY bin ./bin
# The JSON Schema and the annotated example, as documentation only: nothing reads them.
COPY config/pcoip-lb.schema.json config/pcoip-lb.yaml ./config/
# The image's unprivileged `node` user (uid 1000). Ports below 1024 need
# net.ipv4.ip_unprivileged_port_start (see README) — never run the proxy as root for that.
USER node
EXPOSE 443/tcp 4172/tcp 4172/udp
# The admin API (status, metrics, drain). Reachable from outside the container only when the
# config binds admin.bind to a non-loopback address, which requires admin.token; publish it
# (-p 127.0.0.1:8404:8404) only where operators or Prometheus need it.
EXPOSE 8404/tcp
# SIGTERM: stop accepting, let open flows run for shutdown.grace, exit 0 (a second one exits at once).
STOPSIGNAL SIGTERM
# Liveness, not readiness: /livez answers while the process serves, even when every Connector is
# down (restarting the proxy then would only cut the live sessions). It needs the admin server on
# 127.0.0.1 or 0.0.0.0 inside the container; with another admin.bind set PCOIP_LB_LIVEZ_URL.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["node", "-e", "fetch(process.env.PCOIP_LB_LIVEZ_URL).then(r => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["node", "/app/bin/pcoip-lb.js"]
CMD ["start", "--config", "/etc/pcoip-lb/pcoip-lb.yaml"]
