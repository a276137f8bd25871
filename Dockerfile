# The witty-bff image: `docker build -t witty-bff .` from the repository's root.
#
# Dependencies are built in a layer of their own with cargo-chef (from crates.io, pinned): the
# recipe holds only the manifests and Cargo.lock, so a change to src/ rebuilds witty-bff alone and
# the few hundred crates under it come from the layer cache.
FROM rust:1.95-slim-bookworm AS chef
RUN cargo install cargo-chef --version 0.1.78 --locked
WORKDIR /src

# Plan: the dependency recipe (rebuilt on every change, but it only reads the manifests).
FROM chef AS plan
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

# Build: the dependencies (cached while the recipe is unchanged), then the release binary, with
# the GraphiQL assets embedded in it.
FROM chef AS build
COPY --from=plan /src/recipe.json recipe.json
RUN cargo chef cook --release --locked --bin witty-bff --recipe-path recipe.json
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY src ./src
COPY assets ./assets
COPY benches ./benches
RUN cargo build --release --locked --bin witty-bff

# Run: a slim image with CA certificates (the real upstream is HTTPS), as a non-root user.
# Nothing is written to the filesystem: it may be read-only.
FROM debian:bookworm-slim
LABEL org.opencontainers.image.title="witty-bff" \
      org.opencontainers.image.description="GraphQL backend-for-frontend for Hager's Witty-Home cloud API" \
      org.opencontainers.image.licenses="MIT OR Apache-2.0"
# Debian's security updates replace these versions within bookworm: pinning them would break the
# build at the next one (hadolint's DL3008).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 witty \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin witty
COPY --from=build /src/target/release/witty-bff /usr/local/bin/witty-bff
USER 10001:10001
# In a container witty-bff must listen on every interface, not on loopback (its default).
ENV WITTY_BFF_LISTEN=0.0.0.0:8080
EXPOSE 8080
# Liveness: `witty-bff healthcheck` asks /healthz on the port of WITTY_BFF_LISTEN. (/readyz also
# probes the upstream, which is the load balancer's business, not a reason to restart.)
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/witty-bff", "healthcheck"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/witty-bff"]
CMD ["serve"]
