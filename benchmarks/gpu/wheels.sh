#!/usr/bin/env bash
# The wheels the GPU check carries to a machine that cannot download: what ResLab needs and
# that machine's python3 lacks (benchmarks/gpu/carry.txt, pinned), for its Python (3.12,
# x86-64 manylinux). Source-only releases (antlr4-python3-runtime) are built into wheels here.
#
#   bash benchmarks/gpu/wheels.sh                         # into .whl/ (git-ignored), for Python 3.12
#   bash benchmarks/gpu/wheels.sh DIR --python-version 3.11   # for another Python (the rehearsal's)
#
# Needs a package index (any machine with pip and the network); prints the folder's size, which
# must stay well under the device tool's 64 MiB for the working tree.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
DIR=.whl
PYTHON_VERSION=3.12
while (($#)); do
    case $1 in
        --python-version) PYTHON_VERSION=$2; shift 2 ;;
        -*) echo "unknown option $1 (allowed: --python-version X.Y)" >&2; exit 2 ;;
        *) DIR=$1; shift ;;
    esac
done
LIST=benchmarks/gpu/carry.txt
mkdir -p "$DIR"
requirements=$(grep -v '^\s*#' "$LIST" | sed 's/#.*//' | xargs)

# Releases without a wheel: built here (pure Python, so the wheel fits any Python 3).
for sdist_only in $(grep -o '^[^#]*# build-here' "$LIST" | cut -d' ' -f1); do
    name=${sdist_only%%==*}
    ls "$DIR"/"${name//-/_}"-*.whl >/dev/null 2>&1 \
        || python3 -m pip wheel -q --no-deps --no-binary=:all: -w "$DIR" "$sdist_only"
done
# Everything else as published wheels for the target Python and platform, one version each.
python3 -m pip download -q --no-deps --only-binary=:all: --find-links "$DIR" -d "$DIR" \
    --python-version "$PYTHON_VERSION" --implementation cp --abi "cp${PYTHON_VERSION/./}" --abi abi3 --abi none \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    $requirements
echo "wheels for Python $PYTHON_VERSION in $DIR: $(ls "$DIR"/*.whl | wc -l) files, $(du -sm "$DIR" | cut -f1) MiB"
