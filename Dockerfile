# chadgpt's REST service, web page and OpenAI-compatible API in a container (CPU PyTorch).
#   docker build -t chadgpt .
#   docker run -p 8000:8000 -v chadgpt:/home/chadgpt -e CHADGPT_API_KEY=your-key chadgpt
# (another port inside: -e PORT=9000 -p 9000:9000)
# Models, datasets and token files live in the volume at /home/chadgpt. The service listens on 0.0.0.0 inside the
# container and asks for the key (from $CHADGPT_API_KEY) on every change; give the names it is reached by with
# --allowed-host (docker run ... chadgpt chadgpt serve --host 0.0.0.0 --allowed-host chad.example.com).
# CUDA (untested here): docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 -t chadgpt:cuda .
# then docker run --gpus all ...; the CPU image stays small because torch comes from PyTorch's CPU index.
ARG BASE=debian:bookworm-slim
FROM ${BASE}
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_VERSION=2.13.0
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates tini \
    && rm -rf /var/lib/apt/lists/*
# --no-compile: no .pyc files (Python compiles in memory at start-up, about 2 s more); PyTorch's C++ tests (38 MB), headers
# and protoc are left out (no compiler in the image, so torch.compile's C++ backend could not use them anyway)
RUN python3 -m venv /opt/venv \
    && if [ -n "$TORCH_INDEX_URL" ]; then pip install --no-compile "torch==$TORCH_VERSION" --index-url "$TORCH_INDEX_URL"; \
       else pip install --no-compile "torch==$TORCH_VERSION"; fi \
    && cd /opt/venv/lib/python3*/site-packages/torch && rm -rf test include bin/*Test bin/test_* bin/protoc*
COPY setup.py settings.ini README.md MANIFEST.in /src/
COPY chadgpt /src/chadgpt
RUN pip install --no-compile /src && rm -rf /src \
    && useradd --create-home --home-dir /home/chadgpt --uid 10001 --shell /usr/sbin/nologin chadgpt
USER chadgpt
WORKDIR /home/chadgpt
ENV CHADGPT_HOME=/home/chadgpt
VOLUME /home/chadgpt
EXPOSE 8000
ENV PORT=8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD python -c "import os, urllib.request as u; u.urlopen(f'http://127.0.0.1:{os.environ[\"PORT\"]}/openapi.json', timeout=4)" || exit 1
# tini is PID 1: it hands docker stop's SIGTERM to the server (which stops its jobs at a step, with a checkpoint) and
# reaps any process left without a parent (a training job's workers, say)
ENTRYPOINT ["/usr/bin/tini", "--"]
# exec: the server replaces the shell
CMD ["sh", "-c", "exec chadgpt serve --host 0.0.0.0 --port \"$PORT\""]
