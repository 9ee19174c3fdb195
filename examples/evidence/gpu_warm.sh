#!/usr/bin/env bash
# Warm the capacity cells' students on a lent GPU (one process per student and seed, all at once) and
# pack each seed's plateau checkpoint with its curve into DEST/warm.tar (DEST: $OUT, else outputs/warm):
#   bash examples/evidence/gpu_warm.sh     # after gpu_teachers.sh; TEACHERS: its folders
# wide-xl:     the 2x-wide student (2 layers, hidden 128, ffn 256) on the 7.1M teacher (21x)
# medium-large: the 83k student on the 1.77M teacher (21x: the target cell again, new teacher)
# wide-large:  the 2x-wide student on the 1.77M teacher (5.4x)
set -u
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
DEST=${DEST:-${OUT:-outputs/warm}}
WORK=${WORK:-outputs/warm}
TEACHERS=${TEACHERS:-.cache/onpolicy/long_arithmetic/gpu}
LIMIT=${LIMIT:-300}
STEPS=${STEPS:-5000}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
mkdir -p "$DEST" "$WORK"
warm() {  # warm NAME TEACHER SHAPE SEED
    timeout --kill-after=5 "$LIMIT" "$PY" examples/evidence/warm_students.py --device "${DEVICE:-cuda}" \
        --teacher "$TEACHERS/$2" --shape "$3" --seeds "$4" --steps "$STEPS" --every 200 \
        --out "$WORK/$1" ${SMOKE:+--limit 32} > "$WORK/$1-seed$4.log" 2>&1
    echo "gpu_warm: $1 seed $4 exit $? after $SECONDS s" >&2
}
for seed in ${SEEDS:-0 1 2}; do
    warm wide-xl long-xl/step-3000 2,4,256 "$seed" &
    warm medium-large long-large/step-2750 2,2,128 "$seed" &
    warm wide-large long-large/step-2750 2,4,256 "$seed" &
done
wait
# each seed's plateau checkpoint (else its latest), curve and log, in one archive
list=$(cd "$WORK" && for d in */seed-*; do
    if [ -e "$d/plateau" ]; then echo "$d/$(readlink "$d/plateau")" "$d/curve.json"
    else last=$(ls "$d" | grep '^step-' | sort -t- -k2 -n | tail -1); [ -n "$last" ] && echo "$d/$last"; fi
done; ls *.log)
tar -C "$WORK" -cf "$DEST/warm.tar" $list
tar -tf "$DEST/warm.tar" | grep -c model.safetensors >&2
ls -la "$DEST" >&2
