#!/usr/bin/env bash
# Train the Table 1/2 rows the way the shipped ones were trained (2026-11-23, 2-core CPU).
#
# Protocol ("same phase 2"): the shipped ARMANI checkpoint is the first checkpoint (commit
# 91f756f) trained on for one more phase: codebook +800 steps, transformer +1,400 steps, with
# the retrained MaskCLIP. Every baseline and ablation starts from that same first checkpoint,
# wherever its architecture allows (init_strict=false loads the tensors that fit: the M6 row
# keeps the encoder/decoder and the transformer trunk, its product quantiser and image
# embeddings start fresh), and gets exactly that phase with its own switches
# (armani.config.VARIANTS). Segmenter, MaskCLIP and the sketch/partial tokenizers are the
# shipped ones (--reuse). So the rows differ only in what the paper's tables vary, at a
# budget this CPU affords. The exception is the diffusion row: a pixel UNet has nothing to
# inherit, so it is trained from scratch for about the wall time of that phase (1,600 steps,
# ~40 min) on the shipped MaskCLIP's frozen text tower.
#
#   bash research/train_baselines.sh [dalle no_sem2 m6 no_sem1 no_fusion diffusion]
#   then: python -m armani.assemble --run runs/<name> --out checkpoints/<name> --name <name> \
#             --share-with checkpoints/armani --storage-dtype bfloat16
#   (for runs/diffusion the same command writes the diffusion pipeline; nothing is shared)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
if [ ! -f runs/c1/transformer/model.safetensors ]; then  # the first shipped checkpoint, from git
  for part in vqgan transformer; do
    mkdir -p runs/c1/$part
    for f in config.json model.safetensors; do git show 91f756f:checkpoints/armani/$part/$f > runs/c1/$part/$f; done
  done
fi
VQ="train.vqgan.max_steps=800 train.vqgan.warmup_steps=50 vqgan.gan_start_step=200"
TR="train.transformer.init_from=runs/c1/transformer train.transformer.warmup_steps=50 train.transformer.max_steps=1400 transformer.semantic_start_step=1100"
# --resume: a killed run continues from its last checkpoint; finished stages are skipped (--reuse)
common() { $PY src/armani/train.py --config default --variant "$1" --output "runs/$1" --reuse checkpoints/armani --resume "${@:2}"; }
rows=("$@")
[ ${#rows[@]} -eq 0 ] && rows=(dalle no_sem2 m6 no_sem1 no_fusion diffusion)
for name in "${rows[@]}"; do
  case $name in
    dalle)     common dalle --stage vqgan,transformer train.vqgan.init_from=runs/c1/vqgan train.vqgan.init_strict=false $VQ $TR ;;
    no_sem2)   common no_sem2 --stage transformer train.vqgan.init_from=checkpoints/armani/vqgan $VQ $TR ;;
    m6)        common m6 --stage vqgan,transformer train.vqgan.init_from=runs/c1/vqgan train.vqgan.init_strict=false $VQ $TR \
                 train.transformer.init_strict=false ;;
    no_sem1)   common no_sem1 --stage vqgan,transformer train.vqgan.init_from=runs/c1/vqgan $VQ $TR ;;
    no_fusion) common no_fusion --stage vqgan,transformer train.vqgan.init_from=runs/c1/vqgan train.vqgan.init_strict=false $VQ $TR ;;
    armani_nar)  # ARMANI's codebook (reused), a bidirectional transformer; its image tokens are
                 # exactly no_sem2's (same codebook, same data), so that cache is copied, not recomputed
               mkdir -p runs/armani_nar/transformer
               for f in runs/no_sem2/transformer/tokens-{train,val}.safetensors; do
                 [ -f "$f" ] && [ ! -f "runs/armani_nar/transformer/$(basename "$f")" ] && cp "$f" runs/armani_nar/transformer/
               done
               common armani_nar --stage transformer train.vqgan.init_from=checkpoints/armani/vqgan $VQ $TR \
                 train.transformer.init_strict=false ;;
    diffusion) $PY src/armani/train.py --config default --stage diffusion --output runs/diffusion --reuse checkpoints/armani --resume ;;
    *) echo "unknown row $name" >&2; exit 2 ;;
  esac
done
