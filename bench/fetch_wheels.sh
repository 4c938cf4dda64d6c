#!/usr/bin/env bash
# Download, on a machine with PyPI, the wheels that the GPU machine's image lacks into the
# ignored folder .whl/ (carried to the GPU machine by the device tool's `carry`), for
# CPython 3.12 on manylinux x86_64, and list what each one requires.
#
# The GPU image ('cuda', python3 = 3.12) already has jax 0.11.2 (CUDA 13), flax, optax,
# orbax-checkpoint, numpy, absl-py, pyyaml, etils, cloudpickle, protobuf, psutil, pillow,
# torch 2.11 and torchvision 0.26 (see the device notes' package list). It lacks:
#   ml_collections  imported by jaxcnn.train.config          requires absl-py, PyYAML (present)
#   airbench        the peer of bench/cifar_speedrun.py      sdist only: built into a wheel here;
#                                                            imports torch, torchvision (present)
#   grain           jaxcnn.data's grain pipeline (optional)  requires absl-py, cloudpickle, etils,
#                                                            numpy, protobuf (present), and:
#   array_record    grain's record reader                     requires absl-py, etils (present)
#   portpicker      grain's multiprocessing                   requires psutil (present)
# tensorflow-datasets is not needed: jaxcnn imports it only for data.source=tfds.
#
#   bash bench/fetch_wheels.sh          # then: du -sh .whl   (about 4.6 MB)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
rm -rf .whl && mkdir -p .whl
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
           --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${PLATFORMS[@]}" -d .whl \
    ml_collections==1.1.0 grain==0.2.18 array_record==0.8.6 portpicker==1.6.0
# airbench 0.1.8 is published as an sdist only; its wheel is pure Python.
"$PY" -m pip wheel -q --no-deps --no-build-isolation -w .whl airbench==0.1.8
for whl in .whl/*.whl; do
    echo "$(basename "$whl") ($(du -k "$whl" | cut -f1) KiB):" \
        "$(unzip -p "$whl" '*.dist-info/METADATA' | grep '^Requires-Dist' | grep -v extra \
           | sed 's/Requires-Dist: //' | paste -sd, -)"
done
du -sh .whl
