#!/usr/bin/env bash
# The main job: ES meta-training of a Prototypical Network on Omniglot (5-way
# 5-shot, Vinyals split) on every local device, then a test accuracy.
# Usage: bash scripts/main.sh [extra `esmeta train` flags]
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
esmeta train --preset main --workdir "${ESMETA_WORKDIR:-runs/main}" "$@"
