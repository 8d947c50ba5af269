#!/usr/bin/env bash
# Assemble a deployable Hugging Face Space folder from this repository:
#   bash spaces/armani/build.sh [OUT]        (default: build/space)
# The folder holds the Space files, the app (demo/), the library (src/armani), the shipped
# checkpoints and the research tables; push it to a Space repo (git-lfs for *.safetensors).
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-build/space}
rm -rf "$out"
mkdir -p "$out/src"
cp spaces/armani/README.md spaces/armani/app.py spaces/armani/requirements.txt "$out/"
cp -r demo "$out/demo"
cp -r src/armani "$out/src/armani"
if [ -d checkpoints ]; then
  cp -r checkpoints "$out/checkpoints"
else
  echo "warning: no checkpoints/ yet: the Space will fail to start until checkpoints/armani exists" >&2
fi
if [ -f research/README.md ]; then
  mkdir -p "$out/research" && cp research/README.md "$out/research/"
fi
find "$out" -name "__pycache__" -type d -prune -exec rm -rf {} +
printf '*.safetensors filter=lfs diff=lfs merge=lfs -text\n' > "$out/.gitattributes"
echo "built $out ($(du -sh "$out" | cut -f1)); try it: cd $out && python app.py"
