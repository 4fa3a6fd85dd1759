# insider-messaging: one image for the dispatcher (`serve`, the default), `migrate`, `demo`, `openapi` and the
# stand-in provider (`mock-provider`).
#
#   docker build -t insider-messaging .
#   docker run --rm -p 8080:8080 -e WEBHOOK_URL=https://provider.example/sms insider-messaging
#
# No Docker engine runs on the project's CI machines: `.ci/check-deploy` checks this file statically.

# ---- Builder: the Rust toolchain the crate is developed with (rust-version 1.94; CI uses 1.95). -------------
FROM rust:1.95-bookworm AS builder
WORKDIR /build

# Dependencies first, in a layer of their own: it is rebuilt only when Cargo.toml or Cargo.lock change, not on
# every source edit. The dummy lib and main stand in for the crate's own (tests/ is never built here).
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked --bin insider-messaging \
    && rm -rf src

# The crate itself. `sqlx::migrate!` embeds migrations/ into the binary at compile time, so they come in here.
# COPY keeps the files' own (older) times: touch them, or Cargo would take the dummy build for up to date.
COPY src ./src
COPY migrations ./migrations
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked --bin insider-messaging \
    && cp target/release/insider-messaging /usr/local/bin/insider-messaging

# ---- Runtime: glibc matches the builder (both Debian 12). ---------------------------------------------------
FROM debian:bookworm-slim AS runtime

# ca-certificates: an https WEBHOOK_URL. curl: the HEALTHCHECK below.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*

# A fixed, unprivileged uid (used numerically by USER below), so volume ownership is predictable.
RUN groupadd --system --gid 10001 insider \
    && useradd --system --uid 10001 --gid insider --home-dir /var/lib/insider-messaging --shell /usr/sbin/nologin insider \
    && mkdir -p /var/lib/insider-messaging/data \
    && chown -R insider:insider /var/lib/insider-messaging

COPY --from=builder /usr/local/bin/insider-messaging /usr/local/bin/insider-messaging

# With DATABASE_URL unset the service uses the embedded SQLite file ./data/insider-messaging.db, relative to
# this directory: mount a volume on /var/lib/insider-messaging/data to keep it. With Postgres, nothing here
# is written.
WORKDIR /var/lib/insider-messaging
USER 10001:10001

ENV HTTP_ADDR=0.0.0.0:8080
EXPOSE 8080

# Liveness only (the process serves HTTP); /readyz, which also checks the database, is for orchestrators that
# route traffic. If you change HTTP_ADDR's port, override this check too.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["curl", "--fail", "--silent", "--show-error", "--max-time", "2", "http://127.0.0.1:8080/healthz"]

# `serve` applies the database migrations at start-up (HTTP_ADDR takes connections only after them, so a
# healthy container has a migrated database); run `migrate` instead to apply them and exit. On SIGTERM the service stops claiming and
# waits up to SHUTDOWN_GRACE (default 20s) for sends in flight, then up to 12 s more for its last steps: give
# `docker stop` a --time of SHUTDOWN_GRACE and 12 s or more.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/insider-messaging"]
CMD ["serve"]
