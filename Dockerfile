# SoftMap with GPU support: the Streamlit app on 0.0.0.0:8501, the DuckDB cache on a volume.
#   docker build -t softmap .
#   docker run --gpus all -p 8501:8501 -v softmap-data:/data softmap
# Or the HTTP service (docs/service.md) on the GPU host, token required off loopback:
#   docker run --gpus all -p 8600:8600 -v softmap-data:/data -e SOFTMAP_SERVER_TOKEN=… \
#     softmap softmap serve --host 0.0.0.0
# and the app anywhere else, through it (no cache of its own; no GPU needed):
#   docker run -p 8501:8501 -e SOFTMAP_BACKEND_URL=http://gpu-host:8600 \
#     -e SOFTMAP_BACKEND_TOKEN=… softmap
# Both on one host: compose.yaml (`docker compose up`).
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

# The PyTorch wheel index matching the base image's CUDA (cu128: CUDA 12.8).
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128
ARG TORCH_VERSION=2.13.0

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# Ubuntu's own python3 and curl: pinned by the base image's release, not by version here.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-pip curl \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv

WORKDIR /app

# Dependencies first (cached while only the code changes): torch with CUDA 12.8, then the rest.
COPY pyproject.toml constraints.txt README.md ./
RUN grep -v '^torch==' constraints.txt > /tmp/constraints-gpu.txt \
    && pip install --index-url "$TORCH_INDEX" "torch==$TORCH_VERSION" \
    && mkdir -p backend app \
    && touch backend/__init__.py app/__init__.py \
    && pip install -c /tmp/constraints-gpu.txt ".[app,online,server]" \
    && pip uninstall -y softmap

COPY backend/ backend/
COPY app/ app/
COPY pages/ pages/
COPY assets/ assets/
COPY .streamlit/ .streamlit/
RUN pip install --no-deps -e . \
    && useradd --create-home --uid 10001 softmap \
    && mkdir -p /data /app/models /app/app/static/previews /app/app/static/landcover \
    && chown -R softmap:softmap /data /app/models /app/app/static/previews /app/app/static/landcover

USER 10001
ENV SOFTMAP_DB_PATH=/data/softmap.duckdb \
    SOFTMAP_MODELS_DIR=/app/models
VOLUME ["/data"]
EXPOSE 8501 8600

HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["curl", "--fail", "--silent", "http://127.0.0.1:8501/_stcore/health"]

CMD ["streamlit", "run", "app/main.py", "--server.address=0.0.0.0", "--server.port=8501"]
