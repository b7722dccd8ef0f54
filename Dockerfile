# crossfed on the Ray base image of the Ray version pinned in pyproject.toml (ray==2.60.0).
#   docker build -t crossfed:0.1.0 .                                     # CPU
#   docker build --build-arg RAY_VARIANT=-gpu -t crossfed:0.1.0-gpu .    # CUDA
# Used by every pod of helm/crossfed: Ray head and workers, the MLflow server, the RayJob submitter.
ARG RAY_VERSION=2.60.0
ARG PYTHON_TAG=py311
ARG RAY_VARIANT=""
FROM rayproject/ray:${RAY_VERSION}-${PYTHON_TAG}${RAY_VARIANT}

# The base image's non-root `ray` user (uid 1000, gid 100); the chart runs every container as it.
USER ray
WORKDIR /home/ray/crossfed

# The base image already has Ray (==2.60.0, as pinned); torch comes from PyPI (CUDA wheels). For a
# smaller CPU image pass --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cpu.
# The `server` extra is the MLflow server (mlflow[auth] at the version pyproject.toml pins for the whole
# project, psycopg2, boto3): the image has exactly one MLflow, the one the chart's settings are for.
# `energy` (CodeCarbon): the ranks read their GPUs' NVML and the CPUs' RAPL energy counters; `gpu`
# (nvidia-ml-py): each client samples its node's GPUs for the system metrics.
ARG TORCH_INDEX=""
COPY --chown=ray:users pyproject.toml README.md ./
COPY --chown=ray:users platform ./platform
RUN pip install --no-cache-dir ${TORCH_INDEX:+--extra-index-url ${TORCH_INDEX}} ".[generate,s3,server,energy,gpu]" \
    && crossfed --version && mlflow --version

# Example configs and dataset recipes. Jobs run `python -m crossfed <command> CONFIG`.
COPY --chown=ray:users jobs ./jobs

# `crossfed` is installed into the image's Python, whose bin directory is already on PATH. The chart
# runs containers with a read-only root filesystem and a writable /tmp (HOME=/tmp/home there).
ENV PYTHONUNBUFFERED=1 \
    MPLCONFIGDIR=/tmp/matplotlib
CMD ["crossfed", "--help"]
