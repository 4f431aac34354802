# CPU image by default. For a GPU image:
#   docker build --build-arg BASE_IMAGE=nvidia/cuda:13.0.0-cudnn-devel-ubuntu24.04 \
#                --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu130 -t datasetgan:cuda .
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

# Python (CUDA base images have none) and a compiler for the fused operations.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-dev g++ \
 && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 1000 datasetgan
WORKDIR /app
COPY --chown=datasetgan:datasetgan . /app

ENV VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH
RUN python3 -m venv /opt/venv \
 && pip install --no-cache-dir --extra-index-url ${TORCH_INDEX} torch==2.14.1 torchvision==0.29.1 \
 && pip install --no-cache-dir /app

USER datasetgan
ENV HOME=/home/datasetgan
EXPOSE 8000
ENTRYPOINT ["datasetgan"]
CMD ["serve", "--runs", "/runs", "--host", "0.0.0.0", "--port", "8000"]
