# pcoip-lb container image. Build:  docker build -t pcoip-lb .
# Run (config mounted read-only; see README "Docker" for binding 443 as non-root):
#   docker run --rm --sysctl net.ipv4.ip_unprivileged_port_start=0 \
#     -p 443:443/tcp -p 4172:4172/tcp -p 4172:4172/udp \
#     -v /etc/pcoip-lb/pcoip-lb.yaml:/etc/pcoip-lb/pcoip-lb.yaml:ro pcoip-lb

# --- build stage: compile TypeScript, then drop dev dependencies ---------------------------
FROM node:24-slim AS build
WORKDIR /app
COPY package.json package-lock.json tsconfig.json tsconfig.build.json ./
COPY bin ./bin
COPY src ./src
# `npm ci` runs the `prepare` script, which compiles src/ to dist/.
RUN npm ci --no-audit --no-fund \
 && npm prune --omit=dev --no-audit --no-fund

# --- runtime stage: only what runs ----------------------------------------------------------
FROM node:24-slim
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /app/package.json ./package.json
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY --from=build /app/bin ./bin
COPY config/pcoip-lb.yaml /etc/pcoip-lb/pcoip-lb.yaml
# The image's unprivileged `node` user (uid 1000). Ports below 1024 need
# net.ipv4.ip_unprivileged_port_start (see README) — never run the proxy as root for that.
USER node
EXPOSE 443/tcp 4172/tcp 4172/udp
STOPSIGNAL SIGTERM
# The admin server's /healthz (admin.bind, default 127.0.0.1:8404, reachable inside the
# container). It answers 503 while no Connector may take new clients. Drop this line if the
# config disables the admin server or binds it elsewhere.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:8404/healthz').then(r => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["node", "/app/bin/pcoip-lb.js"]
CMD ["start", "--config", "/etc/pcoip-lb/pcoip-lb.yaml"]
