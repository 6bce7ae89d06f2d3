# Container images, for users with Docker (hack/build-images.sh builds the same
# two without a daemon, reproducibly, as an OCI layout). Two targets:
#   docker build --target apiserver  -t vm-migration-apiserver .
#   docker build --target controller -t vm-migration-controller .
# Binaries are linked statically (glibc, crt-static) so the apiserver runs on
# an empty base; the controller's base carries qemu-img for disk formats that
# cannot be streamed (docs/decisions.md §21).

FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
ENV RUSTFLAGS="-C target-feature=+crt-static" CARGO_INCREMENTAL=0
RUN cargo build --release --locked --target x86_64-unknown-linux-gnu \
      -p vmm-apiserver -p vmm-controller --bin vmm-apiserver --bin vmm-controller \
 && mkdir /out \
 && cp target/x86_64-unknown-linux-gnu/release/vmm-apiserver \
       target/x86_64-unknown-linux-gnu/release/vmm-controller /out/

FROM scratch AS apiserver
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/vmm-apiserver /usr/local/bin/vmm-apiserver
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/vmm-apiserver"]

FROM docker.io/library/debian:bookworm-slim AS controller
RUN apt-get update \
 && apt-get install -y --no-install-recommends qemu-utils ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/vmm-controller /usr/local/bin/vmm-controller
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/vmm-controller"]
