# syntax=docker/dockerfile:1
# The ecomlogs application image: `docker build -t ecomlogs .`, then `docker run --rm ecomlogs --help`.
# Stage 1 builds the wheel (Rust core + Python package; librdkafka and OpenSSL are compiled into it, so
# the runtime needs no system libraries beyond glibc); stage 2 installs it into a slim Python image and
# runs as an unprivileged user. The entry point is the `ecomlogs` command: `produce`, `process`, `load`,
# `migrate`, `run` (docker-compose.yml runs the three stages under the `app` profile).

# ---------------------------------------------------------------------------------------------- build
# The lock file's newest crates need Rust 1.89.
FROM rust:1.89-slim-bookworm AS build
# A C toolchain, make and perl build librdkafka and the vendored OpenSSL; Python runs maturin.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential perl python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/maturin && /opt/maturin/bin/pip install --no-cache-dir "maturin>=1.7,<2"
WORKDIR /src
COPY Cargo.toml Cargo.lock pyproject.toml README.md ./
COPY src ./src
COPY migrations ./migrations
COPY contracts ./contracts
COPY python ./python
RUN /opt/maturin/bin/maturin build --release --locked --out /wheels

# ---------------------------------------------------------------------------------------------- runtime
FROM python:3.11-slim-bookworm AS runtime
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels \
 && useradd --system --uid 10001 --user-group --home-dir /app --create-home ecomlogs
USER 10001
WORKDIR /app
ENV PYTHONUNBUFFERED=1
ENTRYPOINT ["ecomlogs"]
CMD ["--help"]
