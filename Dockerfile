# Build: the release binary, with the GraphiQL assets embedded in it.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY src ./src
COPY assets ./assets
COPY benches ./benches
RUN cargo build --release --locked --bin witty-bff

# Run: a slim image with CA certificates (the real upstream is HTTPS), as a non-root user.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home witty
COPY --from=build /src/target/release/witty-bff /usr/local/bin/witty-bff
USER 10001
ENV WITTY_BFF_LISTEN=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/witty-bff"]
CMD ["serve"]
