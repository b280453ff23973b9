# mmgate container image: built with the official Rust image, run on
# distroless (glibc, CA roots, no shell) as a non-root user.
#   docker build -t mmgate .
#   docker run --rm -e MM_API_KEY -p 127.0.0.1:8080:8080 mmgate
# Probes: GET :9090/healthz (liveness), GET :9090/readyz (readiness).

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
COPY --from=build /src/target/release/mmgate /usr/local/bin/mmgate
COPY deploy/compose/mmgate.toml /etc/mmgate/mmgate.toml
ENV MMGATE_CONFIG=/etc/mmgate/mmgate.toml
USER 65532:65532
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/mmgate"]
