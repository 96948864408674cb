# One image for api, worker and migrate. On a GPU host, install the CUDA build of torch 2.13.0
# (the default PyPI wheel); models are mounted as local directories, never downloaded.
FROM python:3.11-slim
WORKDIR /app
# A C/C++ compiler for REDRAFT_TORCH_COMPILE (inductor's CPU kernels, Triton's launchers on a GPU); without one a
# worker asked to compile logs a warning and runs the model as written.
RUN apt-get update && apt-get install -y --no-install-recommends gcc g++ && rm -rf /var/lib/apt/lists/*
ENV PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
COPY pyproject.toml README.md alembic.ini ./
COPY redraft redraft
COPY api api
COPY workers workers
COPY constraints constraints
COPY storage storage
COPY models models
RUN pip install --no-cache-dir .
