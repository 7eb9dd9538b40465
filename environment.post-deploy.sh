#!/usr/bin/env bash
# After conda has made the environment of environment.yml (every third-party package, pinned): this package itself,
# from the folder this script lies in. Snakemake runs it when it creates the environment (--sdm conda); by hand:
#   conda activate transmix && sh environment.post-deploy.sh
set -eu
python -m pip install --no-deps --no-build-isolation -e "$(cd "$(dirname "$0")" && pwd)"
