#!/usr/bin/env bash
# redraft-small's training run (issue 16), in three steps:
#
#   bash scripts/train-redraft-small.sh prepare        # here, on the CPU: read the corpus's packages, tokenise
#                                                      # with redraft-tiny's tokenizer, write ONE pack file
#   bash scripts/train-redraft-small.sh gpu            # on a GPU host, from the repository root, with the pack
#                                                      # beside the code (the device tool: carry build/pack)
#   bash scripts/train-redraft-small.sh cpu            # or here, as far as the CPU goes: the same step on the
#                                                      # CPU (BATCH 64, TOKENS 24M, MINUTES 112 by default)
#   bash scripts/train-redraft-small.sh finish DIR     # here: DIR = what the GPU run wrote (its $OUT); assembles
#                                                      # models/redraft-small and prints `redraft model-report`
#
# The GPU step needs only python3 with torch, transformers, tokenizers and tqdm (no install, no corpus packages,
# no network): it trains `--size small` (ModernBERT 4 x 512, 16.5M parameters; redraft/training/train.py SIZES)
# on a fixed token budget (TOKENS, default 200M: ~6,100 steps of 256 x 128 tokens), stops early at MINUTES
# (default 10) whatever the budget, and writes the fp16 export in shards of at most 15 MB plus the training log to
# $OUT (or build/small-out), within what a device run brings back (8 files, 16 MiB each). `cpu` runs the same step
# on the CPU, niced, with 64 windows a step (twice the tokens a second of 256 on the project's 2-core Xeon, under
# bf16 autocast where the CPU has native bf16 units); BATCH, TOKENS and MINUTES set either step.
set -euo pipefail
cd "$(dirname "$0")/.."
PACK=build/pack/redraft-small-corpus.pt

case "${1:-}" in
  prepare)
    bash scripts/install.sh
    .venv/bin/pip install -q -e ".[train]"
    # the corpus's Debian sources (redraft/training/corpus.py), system-wide, where missing
    debs=(wordnet-base fortunes dict-foldoc dict-jargon dict-devil bible-kjv bible-kjv-text debian-handbook)
    missing=$(for d in "${debs[@]}"; do dpkg -s "$d" >/dev/null 2>&1 || echo "$d"; done)
    if [ -n "$missing" ]; then
      echo "installing the corpus's Debian packages with apt-get:" $missing
      apt-get install -y -qq $missing >/dev/null
    fi
    .venv/bin/python -m redraft.cli train --size small --build-dir build/small --tokenizer-from models/redraft-tiny \
      --prepare-only --pack "$PACK"
    ls -l "$PACK"
    ;;
  gpu|cpu)
    [ -f "$PACK" ] || { echo "no $PACK: run '$0 prepare' first, and carry build/pack to this host"; exit 2; }
    out="${OUT:-build/small-out}"
    work="${WORK:-/tmp/redraft-small}"
    mkdir -p "$out/redraft-small"
    if [ "$1" = gpu ]; then
      nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
      run=(python3) device="${DEVICE:-cuda}" batch="${BATCH:-}" tokens="${TOKENS:-200M}" minutes="${MINUTES:-10}"
    else
      run=(nice -n 10 .venv/bin/python) device=cpu batch="${BATCH:-64}" tokens="${TOKENS:-24M}" minutes="${MINUTES:-112}"
    fi
    # TQDM_MININTERVAL: a progress line every 30 s, not a thousand redraws in the log
    PYTHONPATH="$PWD" PYTHONUNBUFFERED=1 TQDM_MININTERVAL=30 "${run[@]}" -m redraft.cli train --size small \
      --device "$device" ${batch:+--batch-size "$batch"} --build-dir "$work/build" --from-pack "$PACK" \
      --token-budget "$tokens" --max-minutes "$minutes" --export "$work/export" 2>&1 | tee "$out/train.out"
    cp "$work"/export/config.json "$work"/export/model*.safetensors* "$out/redraft-small/"
    [ ! -f "$work/build/train_log.jsonl" ] || cp "$work/build/train_log.jsonl" "$out/"  # none before step 50
    ls -l "$out" "$out/redraft-small"
    ;;
  finish)
    from="${2:?usage: $0 finish DIR, the folder the GPU run wrote}"
    rm -rf models/redraft-small
    mkdir -p models/redraft-small
    cp "$from"/redraft-small/* models/redraft-small/
    # redraft-small is trained on redraft-tiny's tokenizer: the same token ids, so the two score the same tokens
    cp models/redraft-tiny/tokenizer.json models/redraft-tiny/tokenizer_config.json models/redraft-small/
    cp "$from/train_log.jsonl" build/small/train_log.jsonl  # the card tables its held-out evaluations
    .venv/bin/python -m redraft.cli model-report --model-dir models/redraft-tiny --model-dir models/redraft-small \
      --card models/redraft-small/README.md \
      --build-dir build/small
    ;;
  *)
    sed -n 2,17p "$0"
    exit 2
    ;;
esac
