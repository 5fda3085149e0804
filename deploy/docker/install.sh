#!/bin/sh
# The image's install steps, in one place: the Dockerfile runs them, and so does
# tests/deploy/test_image_install.py (in a fresh virtualenv), so the test checks what the
# image really does.
#
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
    echo "usage: install.sh wheel SRC WHEELDIR | install.sh venv PREFIX WHEELDIR" >&2
    exit 2
}

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
