# erpsync as a container image: built in a Rust image, run as an unprivileged user in a
# slim Debian one that holds the binary, the shipped flows and the flow-file schema.
#
#   docker build -t erpsync .
#   docker run --rm erpsync validate /usr/share/erpsync/flows/demo
#   docker run -d --name erpsync --env-file erpsync.env -p 8700:8700 \
#       -v /etc/erpsync/flows:/etc/erpsync/flows:ro -v erpsync-state:/var/lib/erpsync erpsync
#
# Where things live in the image:
#   /etc/erpsync/flows        your flow project (mount it read-only); the default command runs it
#   /var/lib/erpsync          the state (a volume): name it in the project,
#                             `state: { url: sqlite:/var/lib/erpsync/erpsync.sqlite }`, so the
#                             first start creates it and a lost volume is never silently replaced
#   environment (--env-file)  secrets the flow files name as ${VARS}, ERPSYNC_ADMIN_TOKEN
#   /usr/share/erpsync        the shipped flows (flows/) and schema (schemas/flow.schema.json)
#
# .ci/image runs these same steps without docker when no container engine is available.

FROM rust:1.89-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY src ./src
COPY crates ./crates
COPY flows ./flows
COPY schemas ./schemas
COPY benches ./benches
RUN cargo build --release --locked --bin erpsync

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/erpsync --create-home erpsync \
    && mkdir -p /etc/erpsync/flows
COPY --from=build /src/target/release/erpsync /usr/local/bin/erpsync
COPY flows /usr/share/erpsync/flows
COPY schemas /usr/share/erpsync/schemas
USER erpsync
WORKDIR /var/lib/erpsync
VOLUME /var/lib/erpsync
EXPOSE 8700
ENTRYPOINT ["erpsync"]
CMD ["run", "/etc/erpsync/flows", "--listen", "0.0.0.0:8700", "--log-format", "json"]
