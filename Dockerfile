# mmgate container image: built with the official Rust image, run on
# distroless (glibc, CA roots, no shell) as a non-root user.
#   docker build -t mmgate .
#   docker run --rm -e MM_API_KEY -p 127.0.0.1:8080:8080 mmgate
# Its default config (config/container.toml) is the embedded default on
# 0.0.0.0:8080 (admin 0.0.0.0:9090) with anonymous callers allowed from
# Docker's bridge networks (172.16.0.0/12): a published port's connections
# come from there. Compose and Kubernetes mount their own config over
# /etc/mmgate/mmgate.toml. Probes: GET :9090/healthz (liveness), :9090/readyz
# (readiness); HEALTHCHECK runs `mmgate healthcheck` (no shell or curl here).

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# Dependencies first, so source edits do not rebuild them.
COPY Cargo.toml Cargo.lock ./
COPY benches ./benches
COPY tests ./tests
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo build --release --locked --bin mmgate \
    && rm -rf src
COPY src ./src
COPY config ./config
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked --bin mmgate \
    && strip target/release/mmgate

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="mmgate" \
      org.opencontainers.image.description="Local authenticating reverse proxy for the MachineMetrics API" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.documentation="README.md"
COPY --from=build /src/target/release/mmgate /usr/local/bin/mmgate
COPY config/container.toml /etc/mmgate/mmgate.toml
ENV MMGATE_CONFIG=/etc/mmgate/mmgate.toml
USER 65532:65532
EXPOSE 8080 9090
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/mmgate", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/mmgate"]
