# sglang's release image with the lab on top, so that `lab case` runs next to `sglang serve`.
# Built by docker/build-images.sh only when the base image can be had (a registry answers).
# docker/build-images.sh passes SGLANG_TAG (v + SGLANG_VERSION of lab/frameworks/sglang.py).
ARG SGLANG_TAG
FROM lmsysorg/sglang:${SGLANG_TAG}
COPY build/wheelhouse/lab/ /tmp/lab-wheel/
# The lab must not change the sglang stack under test: install it without its pins, then add
# only the dependencies the image lacks, with every package already there held at its version.
ENV PIP_BREAK_SYSTEM_PACKAGES=1
RUN python3 -m pip install --no-cache-dir --no-deps /tmp/lab-wheel/*.whl \
    && python3 -m pip list --format=freeze > /tmp/keep.txt \
    && python3 -c "import re; from importlib.metadata import requires; \
print('\n'.join(re.match(r'[A-Za-z0-9._-]+', r).group() \
for r in requires('nightly-lab') or [] if 'extra ==' not in r))" > /tmp/lab-deps.txt \
    && python3 -m pip install --no-cache-dir -c /tmp/keep.txt -r /tmp/lab-deps.txt \
    && rm -rf /tmp/lab-wheel /tmp/keep.txt /tmp/lab-deps.txt
ARG SGLANG_TAG
ARG SGLANG_REVISION=
ARG LAB_VERSION=unknown
ARG SOURCE_HASH=unknown
# The code under test is sglang: the OCI source labels name it (results.json's commit_sha when
# neither --commit nor CI names one). Both are set so that the base OS's own labels (Ubuntu's
# org.opencontainers.image.version=22.04) cannot pass for sglang's; revision stays empty unless
# SGLANG_REVISION is given.
LABEL nightly-lab.version=$LAB_VERSION \
      nightly-lab.source-hash=$SOURCE_HASH \
      nightly-lab.sglang-tag=$SGLANG_TAG \
      org.opencontainers.image.source=https://github.com/sgl-project/sglang \
      org.opencontainers.image.version=$SGLANG_TAG \
      org.opencontainers.image.revision=$SGLANG_REVISION
