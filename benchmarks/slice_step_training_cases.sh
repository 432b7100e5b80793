#!/usr/bin/env bash
# How the slice engines' walk step (`slice_step`) and slice2d's click rule (`click_grow_iou`) were chosen:
# one click (`center`) on 5 la_mri and 5 hn_ct_openkbp cases of the *training* splits (never the held-out
# ones), each setting in its own run folder.
#   bash benchmarks/slice_step_training_cases.sh OUT_DIR
#   python benchmarks/compare_runs.py step1=OUT_DIR/slice2d_la_step1 step4=OUT_DIR/slice2d_la_step4 ...
set -euo pipefail
OUT=${1:?out dir}
D=${VOXSAM_SHARED_DATA:-$(dirname "$0")/../../shared/data}
VOXSAM=${VOXSAM:-voxsam}
LA=la_4498CA6DZWELOXCBRYRF,la_57SGAJMLCTCH92QUA0EE,la_5QFK2PMHNX7UALK52NNA,la_78NJ5YFQF72BGC8RO51C,la_8ZG2TRZ81MAWHZPN9KKG
HN=openkbp_pt010,openkbp_pt020,openkbp_pt030,openkbp_pt040,openkbp_pt050
run() {  # NAME DATASET CASES ENGINE [engine options...]
  local name=$1 data=$2 cases=$3 engine=$4; shift 4
  local opts=(); for o in "$@"; do opts+=(--engine-option "$o"); done
  $VOXSAM eval "$D/$data" --cases "$cases" --engine "$engine" --protocol center --clicks 1 "${opts[@]}" --out "$OUT/$name"
}
for n in 1 2 3 4; do run slice2d_la_step$n la_mri "$LA" slice2d slice_step=$n click_grow_iou=0; done
for n in 1 2; do run slice2d_hn_step$n hn_ct_openkbp "$HN" slice2d slice_step=$n click_grow_iou=0; done
run slice2d_la_grow la_mri "$LA" slice2d
run slice2d_hn_grow hn_ct_openkbp "$HN" slice2d
for n in 1 4; do for s in 0 0.7; do run memory3d_la_step${n}_stab$s la_mri "$LA" memory3d slice_step=$n min_stability=$s; done; done
