#!/usr/bin/env bash
# Everything we check on a lent GPU machine, in one call (device time is scarce: ~15 min a session).
# Runs from the repository root with the machine's own python3 (torch+CUDA); writes under $OUT:
#   env.txt, correct.json, profile.json, gpu256.trace.json.gz, speed.json, log.txt, sweep.tgz
# Usage (device tool): bash benchmarks/gpu_session.sh [SWEEP_KIMG] [SWEEP_SECONDS]
set -u
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
SWEEP_KIMG=${1:-40}
SWEEP_S=${2:-200}
W=/tmp/gw
mkdir -p $W
{
  nvidia-smi; python3 -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0))"
  nproc; free -g
} >"$OUT/env.txt" 2>&1
log() { echo "== $(date +%T) $*" | tee -a "$OUT/log.txt"; }

log correct
timeout 80 python3 benchmarks/gpu_checks.py correct --out $W/c 2>&1 | tail -40 | tee -a "$OUT/log.txt"
cp $W/c/correct.json "$OUT/" 2>/dev/null

log profile gpu-256
timeout 90 python3 benchmarks/profile_train.py --preset gpu-256 --device cuda --steps 20 --warmup 5 \
  --json "$OUT/profile.json" --trace $W/gpu256.trace.json 2>&1 | tail -30 | tee -a "$OUT/log.txt"
gzip -c $W/gpu256.trace.json > "$OUT/gpu256.trace.json.gz" 2>/dev/null

log speed gpu-256
timeout 150 python3 benchmarks/gpu_checks.py speed --out $W/s --preset gpu-256 --kimg 2.5 --warmup-kimg 0.75 \
  --workers 12 --image-size 320 --compounds 4 --amp-modes 1 0 2>&1 | tail -40 | tee -a "$OUT/log.txt"
cp $W/s/speed.json "$OUT/" 2>/dev/null

log sweep
python3 -c "from gandl_core.synth import make_screen; make_screen('$W/screen', plates=1)"
timeout "$SWEEP_S" python3 benchmarks/sweep_train.py $W/screen --out $W/sweep --device cuda --kimg "$SWEEP_KIMG" \
  --variants ${SWEEP_VARIANTS:-base noada noada_resize} --procs 3 --threads 2 --minutes "${SWEEP_MIN:-2.2}" 2>&1 | tee -a "$OUT/log.txt"
(cd $W/sweep && tar czf "$OUT/sweep.tgz" --exclude='*.pt' . )
ls -la "$OUT"
log done
