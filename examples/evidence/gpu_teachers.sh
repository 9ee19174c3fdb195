#!/usr/bin/env bash
# Rebuild issue 11's teachers on a lent GPU in ~5 minutes (each is ~1 h of CPU on the project machine),
# all at once, and pack the picked checkpoint of each into DEST (default $OUT, else outputs/teachers):
#   bash examples/evidence/gpu_teachers.sh            # on the GPU machine, from the repository root
# short-large: the 1.77M teacher of the short 21x cell (3 digits; samples right ~0.76, as recorded)
# long-large:  the 1.77M teacher of the target cell (6 digits through 3; samples right ~0.91)
# long-xl:     a 7.1M teacher, the same shape twice as wide (21x a student twice as wide as medium)
# long-xl-lr5e-4: the same at half the rate (a spare, not packed). Measured on an H200: 140 s in all
# (docs/results/gpu-rebuild/). Each build stops at LIMIT seconds (default 330); a stopped build's
# latest checkpoint is packed.
set -u
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
DEST=${DEST:-${OUT:-outputs/teachers}}
LIMIT=${LIMIT:-330}
WORK=${WORK:-outputs/teachers}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
mkdir -p "$DEST" "$WORK"
build() {  # build NAME SHAPE STAGES PICK
    timeout --kill-after=5 "$LIMIT" "$PY" examples/evidence/build_teacher.py --device "${DEVICE:-cuda}" \
        --shape "$2" --stages "$3" --pick-samples "$4" --eval-every 250 --out "$WORK/$1" \
        > "$WORK/$1.log" 2>&1
    echo "gpu_teachers: $1 exit $? after $SECONDS s" >&2
}
build short-large 3,6,768 3:3000:1e-3 0.76 &
build long-large 3,6,768 3:1500:1e-3,6:4000:1e-3 0.91 &
build long-xl 3,12,1536 3:1500:1e-3,6:4000:1e-3 0.91 &
build long-xl-lr5e-4 3,12,1536 3:1500:5e-4,6:4000:5e-4 0.91 &
wait
pack() {  # pack NAME: the picked (else latest) checkpoint as NAME.tar, split in 15 MB parts
    local dir=$WORK/$1 step
    if [ -e "$dir/picked" ]; then step=$(readlink "$dir/picked")
    else step=$(ls "$dir" 2>/dev/null | grep '^step-' | sort -t- -k2 -n | tail -1); fi
    [ -n "$step" ] || { echo "gpu_teachers: $1 has no checkpoint" >&2; return; }
    tar -C "$dir" -cf "$WORK/$1.tar" "$step" && split -b 15m -d "$WORK/$1.tar" "$DEST/$1.tar.part"
    echo "gpu_teachers: packed $1/$step" >&2
}
tar -C "$WORK" -czf "$DEST/curves.tgz" $(cd "$WORK" && ls -d *.log */curve.json 2>/dev/null)
# at most 64 MB come back from a lent machine: the three teachers (7 + 7 + 28 MB), not the spare
for name in short-large long-large long-xl; do pack "$name"; done
ls -la "$DEST" >&2
