# One image with dp, dp-worker and dp-controller (Kubernetes mode runs the
# controller as a Deployment and workers as Jobs from this image). The
# engines' method scripts need bash, jq and the engine's own tools
# (PostgreSQL 15: pg_basebackup, pg_waldump, pg_ctl).
FROM debian:12 AS build
WORKDIR /src
COPY . .
RUN bash scripts/install-deps.sh build && make -j"$(nproc)"

FROM debian:12
RUN apt-get update && apt-get install -y --no-install-recommends \
        libarchive13 libzstd1 libssl3 libcurl4 libsqlite3-0 libcjson1 libyaml-0-2 \
        libmicrohttpd12 ca-certificates bash jq tar \
        postgresql-client-15 postgresql-15 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/bin/ /usr/local/bin/
COPY --from=build /src/methods/ /usr/local/share/dp/methods/
ENTRYPOINT ["/usr/local/bin/dp"]
