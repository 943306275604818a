# The reference image: the lab and its dependencies in a venv at /opt/lab, installed offline from
# the wheelhouse that docker/build-images.sh fills (the build context is the repository root;
# .dockerignore lets only build/wheelhouse through). Runs as the unprivileged user `lab`.
#
# One stage on purpose: the dependency wheels stay in a layer (about 250 MB), but a second stage
# would copy the 1.2 GB venv once more at every cold build and keep both on disk.
FROM nightly-lab/base:bookworm
ENV PATH=/opt/lab/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN groupadd --gid 1000 lab \
    && useradd --uid 1000 --gid 1000 --create-home --shell /bin/bash lab \
    && python3 -m venv /opt/lab

# The heavy layer first: cached for as long as the dependency wheels do not change.
COPY build/wheelhouse/deps/ /tmp/wheels/
RUN pip install --no-cache-dir --no-index --find-links /tmp/wheels /tmp/wheels/*.whl \
    && rm -rf /tmp/wheels

# The lab's own wheel last: a change to the lab rebuilds only the layers from here on.
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
