# syntax=docker/dockerfile:1.7
# One image per service, each a target of this file: `make images` builds them all,
# `docker build --target gateway -t recsys-gateway .` one. Every image runs its service as
# uid 1000 with the same `python -m services.<name>` the local launcher runs, and carries
# only its service's extra of pyproject.toml (the gateway's has no torch, Ray or FAISS).
#
# The trainer and the Ray nodes of its cluster (KubeRay) share one image built on the
# official Ray image of the pinned Ray and Python versions; `trainer-gpu` is its CUDA
# variant for GPU workers. Production Triton is the official image
# (nvcr.io/nvidia/tritonserver:26.08-py3, the release of tritonclient 2.73) with its
# PyTorch backend, used as it is: k8s/overlays/gpu runs it. The `embedding` target here
# is the local default, the tritonserver bundled in nvidia-pytriton with its Python
# backend, for clusters without GPUs (k8s/overlays/cpu).

# checkov:skip=CKV_DOCKER_2:Kubernetes probes each service (gRPC health, Triton's /v2/health), not Docker's HEALTHCHECK
# The CPU wheels of torch; on PyPI itself torch is a CUDA build of several GB.
ARG CPU_TORCH_INDEX=https://download.pytorch.org/whl/cpu

# ---- the project as a wheel: the only stage that sees the source tree ----------------------
FROM python:3.11.14-slim-bookworm AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY shared/ shared/
COPY services/ services/
COPY suite/ suite/
COPY gen/python/ gen/python/
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# ---- what every Python-image service shares ---------------------------------------------------
FROM python:3.11.14-slim-bookworm AS service
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RECSYS_DATA_DIR=/var/lib/recsys \
    RECSYS_MODEL_DIR=/var/lib/recsys/models
RUN groupadd --gid 1000 recsys \
    && useradd --uid 1000 --gid 1000 --no-create-home --home-dir /var/lib/recsys \
       --shell /usr/sbin/nologin recsys \
    && install -d -o 1000 -g 1000 /var/lib/recsys
WORKDIR /var/lib/recsys

FROM service AS gateway
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    pip install "$(echo /wheels/recsys_suite-*.whl)[gateway]" \
    && pip uninstall --yes setuptools wheel
USER 1000:1000
EXPOSE 50051 9151
ENTRYPOINT ["python", "-m", "services.gateway"]

FROM service AS features
ARG CPU_TORCH_INDEX
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    pip install --extra-index-url "${CPU_TORCH_INDEX}" \
        "$(echo /wheels/recsys_suite-*.whl)[features]" \
    && pip uninstall --yes setuptools wheel
USER 1000:1000
EXPOSE 50052 9152
ENTRYPOINT ["python", "-m", "services.features"]

FROM service AS retrieval
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    pip install "$(echo /wheels/recsys_suite-*.whl)[retrieval]" \
    && pip uninstall --yes setuptools wheel
USER 1000:1000
EXPOSE 50053 9153
ENTRYPOINT ["python", "-m", "services.retrieval"]

# The bundled tritonserver with the Python backend: the official python image is built with
# a shared libpython, which the backend's stub links against.
FROM service AS embedding
ARG CPU_TORCH_INDEX
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    pip install --extra-index-url "${CPU_TORCH_INDEX}" \
        "$(echo /wheels/recsys_suite-*.whl)[embedding]" \
    && pip uninstall --yes setuptools wheel
USER 1000:1000
EXPOSE 50055 8000 9155
ENTRYPOINT ["python", "-m", "services.embedding"]

# ---- the trainer and its Ray nodes: the official Ray image (user ray, uid 1000) ----------------
FROM rayproject/ray:2.60.0-py311-cpu AS trainer
ARG CPU_TORCH_INDEX
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RECSYS_DATA_DIR=/var/lib/recsys \
    RECSYS_MODEL_DIR=/var/lib/recsys/models
USER root
RUN install -d -o 1000 -g 100 /var/lib/recsys
USER 1000
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    pip install --extra-index-url "${CPU_TORCH_INDEX}" \
        "$(echo /wheels/recsys_suite-*.whl)[trainer]"
WORKDIR /var/lib/recsys
EXPOSE 50054 9154
ENTRYPOINT ["python", "-m", "services.trainer"]

# The same for GPU workers: torch's CUDA build from PyPI on Ray's CUDA image.
FROM rayproject/ray:2.60.0-py311-gpu AS trainer-gpu
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RECSYS_DATA_DIR=/var/lib/recsys \
    RECSYS_MODEL_DIR=/var/lib/recsys/models
USER root
RUN install -d -o 1000 -g 100 /var/lib/recsys
USER 1000
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    pip install "$(echo /wheels/recsys_suite-*.whl)[trainer]"
WORKDIR /var/lib/recsys
EXPOSE 50054 9154
ENTRYPOINT ["python", "-m", "services.trainer"]
