#!/usr/bin/env bash
# Scores an engine on the held-out head-and-neck CT split (hn_ct_openkbp: the last 12 case ids in sorted
# order, never trained on by any bundled weights; configs/slice2d_litemedsam.yaml lists them), 7 hand-drawn organs.
#   bash benchmarks/hn_ct_validation.sh ENGINE PROTOCOL OUT_DIR [extra voxsam eval options...]
#   bash benchmarks/hn_ct_validation.sh classic center runs/val/hn_classic_center
#   bash benchmarks/hn_ct_validation.sh slice2d slice-box runs/val/hn_slice2d_slicebox --clicks 1
# summary.md / summary.json / results.csv land in OUT_DIR; reruns resume.
set -euo pipefail
ENGINE=${1:?engine}; PROTOCOL=${2:?protocol}; OUT=${3:?out dir}; shift 3
D=${VOXSAM_SHARED_DATA:-$(dirname "$0")/../../shared/data}
VOXSAM=${VOXSAM:-voxsam}
CASES=openkbp_pt055,openkbp_pt057,openkbp_pt058,openkbp_pt059,openkbp_pt060,openkbp_pt061,openkbp_pt062,openkbp_pt064,openkbp_pt065,openkbp_pt066,openkbp_pt067,openkbp_pt068
$VOXSAM eval "$D/hn_ct_openkbp" --cases "$CASES" --engine "$ENGINE" --protocol "$PROTOCOL" --clicks 1,3,5 "$@" --out "$OUT"
