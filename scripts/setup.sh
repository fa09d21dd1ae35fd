#!/usr/bin/env bash
# Create .venv inside the checkout and install equiv with its test, dev, launcher and canonicalize
# extras. Idempotent and quick when nothing changed (a stamp records the pyproject.toml it
# installed). torch/torchvision are pinned to the builds available offline on the project
# machines; on a GPU machine with internet any recent CUDA build works
# (pip install -e ".[test,canonicalize]" alone).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
has() { .venv/bin/python -c "from importlib.metadata import version; version('$1')" 2>/dev/null; }
if ! has torch || ! has torchvision; then
  .venv/bin/pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
fi
stamp=.venv/.equiv-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || ! .venv/bin/python -c "import equiv" 2>/dev/null
then
  .venv/bin/pip install --quiet -e ".[test,dev,joblib,slurm,canonicalize]"
  echo "$want" > "$stamp"
fi
echo "setup: .venv ready (torch $(.venv/bin/python -c "from importlib.metadata import version; print(version('torch'))"))"
