# syntax=docker/dockerfile:1
# Halyard broker image: built with the `dist` profile (stripped, LTO) in a
# Rust builder, run as a non-root user on Debian slim.
#   docker build -t halyard .
#   docker run -p 61613:61613 -p 8161:8161 -v halyard-data:/var/lib/halyard halyard
# Compose files for a master/slave pair: deploy/compose/.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --locked --profile dist -p halyard \
    && cp target/dist/halyard /usr/local/bin/halyard

FROM debian:bookworm-slim
RUN groupadd --system --gid 10001 halyard \
    && useradd --system --uid 10001 --gid halyard --home-dir /var/lib/halyard \
       --shell /usr/sbin/nologin halyard \
    && mkdir -p /var/lib/halyard /etc/halyard \
    && chown halyard:halyard /var/lib/halyard
COPY --from=build /usr/local/bin/halyard /usr/bin/halyard
COPY deploy/docker/halyard.toml /etc/halyard/halyard.toml
USER halyard
WORKDIR /var/lib/halyard
VOLUME /var/lib/halyard
# STOMP, STOMP over WebSocket, OpenWire, admin HTTP.
EXPOSE 61613 61614 61616 8161
# Liveness: /healthz is 200 while the broker runs, master or slave. (/readyz
# is 200 on the master only: a load balancer's check, not this one, or a
# waiting slave would be restarted.) No curl in slim: bash's /dev/tcp.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8161 && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["/usr/bin/halyard"]
CMD ["broker", "--config", "/etc/halyard/halyard.toml"]
