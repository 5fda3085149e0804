#!/bin/sh
# The image's install steps, in one place: the Dockerfile runs them, and so does
# tests/deploy/test_image_install.py (in a fresh virtualenv), so the test checks what the
# image really does.
#
#   install.sh toolchain            a C compiler for booktape's C extensions, from Debian's
#                                   packages, when there is none (the build stage only: the
#                                   final stage gets the built virtualenv, not the compiler)
#   install.sh wheel SRC WHEELDIR   build booktape's wheel from the source tree SRC (no deps)
#   install.sh venv PREFIX WHEELDIR create a virtualenv at PREFIX and install that wheel
#                                   alone (its dependencies come from the package index)
#
# PYTHON selects the interpreter (default python3). Nothing here needs network access
# except pip's downloads from the package index.
set -eu

PYTHON="${PYTHON:-python3}"
export PIP_DISABLE_PIP_VERSION_CHECK=1
export PIP_NO_INPUT=1

usage() {
    echo "usage: install.sh toolchain | install.sh wheel SRC WHEELDIR | install.sh venv PREFIX WHEELDIR" >&2
    exit 2
}

if [ "${1:-}" = toolchain ]; then
    [ "$#" -eq 1 ] || usage
    # Without a compiler the wheel still builds (the extensions are optional) but booktape
    # then runs their Python twins: the same results, slower (a depth frame's proof ~6x).
    if ! command -v cc >/dev/null 2>&1; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            gcc libc6-dev >/dev/null
        rm -rf /var/lib/apt/lists/*
    fi
    exit 0
fi

[ "$#" -eq 3 ] || usage

case "$1" in
    wheel)
        "$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$3" "$2"
        ;;
    venv)
        "$PYTHON" -m venv "$2"
        set -- "$2" "$3"
        # exactly one booktape wheel must be there: the image installs that and nothing else
        count=$(find "$2" -maxdepth 1 -name 'booktape-*.whl' | wc -l)
        if [ "$count" -ne 1 ]; then
            echo "install.sh: expected one booktape wheel in $2, found $count" >&2
            exit 1
        fi
        wheel=$(find "$2" -maxdepth 1 -name 'booktape-*.whl')
        "$1/bin/python" -m pip install --quiet "$wheel"
        "$1/bin/booktape" --version
        ;;
    *)
        usage
        ;;
esac
