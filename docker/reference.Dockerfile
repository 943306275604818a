# The reference image: the lab and its dependencies in a venv at /opt/lab, installed offline from
# the wheelhouse that docker/build-images.sh fills (the build context is the repository root;
# .dockerignore lets only build/wheelhouse through). Runs as the unprivileged user `lab`.

# Stage 1: the heavy dependencies. Cached for as long as the dependency wheels do not change.
FROM nightly-lab/base:bookworm AS deps
RUN python3 -m venv /opt/lab
COPY build/wheelhouse/deps/ /wheels/
RUN /opt/lab/bin/pip install --no-cache-dir --no-index --find-links /wheels /wheels/*.whl

# Stage 2: the image. The wheels stay behind in stage 1; only the installed venv is copied.
FROM nightly-lab/base:bookworm
ENV PATH=/opt/lab/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN groupadd --gid 1000 lab && useradd --uid 1000 --gid 1000 --create-home --shell /bin/bash lab
COPY --from=deps /opt/lab /opt/lab
# The lab's own wheel last: a code change rebuilds only the layers from here on.
COPY build/wheelhouse/lab/ /tmp/lab-wheel/
RUN pip install --no-cache-dir --no-index --no-deps /tmp/lab-wheel/*.whl \
    && pip check \
    && rm -rf /tmp/lab-wheel
ARG LAB_VERSION=unknown
ARG SOURCE_HASH=unknown
LABEL nightly-lab.version=$LAB_VERSION \
      nightly-lab.source-hash=$SOURCE_HASH
USER lab
WORKDIR /home/lab
CMD ["lab", "--help"]
