#!/usr/bin/env bash
# The project's two entry points for a fresh clone (only Python 3.11 needed):
#   bash run.sh demo    set up .venv and start the Gradio app on the shipped checkpoint
#   bash run.sh test    set up .venv and run the full test suite
# Both are idempotent: a second run reuses the virtual environment.
set -euo pipefail
cd "$(dirname "$0")"

export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export GRADIO_ANALYTICS_ENABLED=False MPLBACKEND=Agg PYTHONUNBUFFERED=1

setup() {
  local py=${PYTHON:-python3}
  if [ ! -x .venv/bin/python ]; then
    echo "[setup] creating .venv"
    "$py" -m venv .venv
  fi
  # The stamp makes a second run fast; it changes whenever requirements.txt does.
  local stamp=".venv/.installed-$(sha1sum requirements.txt pyproject.toml | sha1sum | cut -c1-12)"
  if [ ! -f "$stamp" ]; then
    echo "[setup] installing pinned requirements (a few minutes the first time)"
    .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt 2>&1 \
      | grep -v "^WARNING: Location" || true
    .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -e . 2>&1 \
      | grep -v "^WARNING: Location" || true
    .venv/bin/python -c "import armani, torch, accelerate, open_clip, datasets" 
    rm -f .venv/.installed-*
    touch "$stamp"
  fi
}

case "${1:-}" in
  demo)
    setup
    shift
    echo "[demo] starting the ARMANI app on http://127.0.0.1:7860 (shipped checkpoint, offline)"
    exec .venv/bin/python demo/app.py "$@"
    ;;
  test)
    setup
    shift
    # The browser test drives Debian's Chromium through Playwright (never `playwright install`).
    command -v chromium >/dev/null || { echo "[test] installing chromium (apt)"; \
      (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || echo "[test] no chromium: browser test skipped"; }
    exec .venv/bin/python -m pytest -q "$@"
    ;;
  *)
    echo "usage: bash run.sh demo|test [args]" >&2
    exit 2
    ;;
esac
