#!/usr/bin/env bash
# GAN balance on the shipped codebook: fresh discriminator from step 50, lr 1e-4, 500 steps, weight 0.8 vs 0.3
set -x
cd "$(dirname "$0")/../../.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 MPLBACKEND=Agg
for w in 0.8 0.3; do
  n=gan${w/./}
  .venv/bin/python src/armani/train.py --config default --stage vqgan --output runs/$n --reuse checkpoints/armani --resume \
    maskclip.text_attention_radius=0 sketch_tokenizer.recon_loss=edges sketch_tokenizer.drawn_sketch_prob=0.3 \
    train.vqgan.init_from=checkpoints/armani/vqgan train.vqgan.lr=1e-4 train.vqgan.warmup_steps=50 \
    train.vqgan.max_steps=500 vqgan.gan_start_step=50 vqgan.disc_weight=$w train.vqgan.checkpoint_every=100 \
    train.vqgan.eval_every=250 train.vqgan.log_every=25 train.tracker=none > runs/$n.log 2>&1
done
for w in 0.8 0.3; do
  n=gan${w/./}
  .venv/bin/python research/codebook_anchor.py --vqgan runs/$n/vqgan/final --seeds 0 1 2 --out research/results/gan_balance_2026-12-06/codebook_anchor_$n.json
done

