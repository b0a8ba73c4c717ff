#!/usr/bin/env bash
# Everything the test suite needs on a fresh machine: the package with its optional extras, and a Chromium
# from the distribution's packages for the browser tests (Playwright drives it; no browser is downloaded).
# Safe to run again: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -e ".[test,onnx,openvino,int8,serve,tensorboard,geo]"
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
    sudo=""
    if [ "$(id -u)" != "0" ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
fi
