#!/usr/bin/env bash
# Scores an engine on the held-out validation split of configs/sam3d_small.yaml (never trained on):
# la_mri first 10 cases, acdc_mri patients 002/019/028, spleen_ct, totalseg_ct (structures >= 2000 voxels).
#   bash benchmarks/validation_split.sh ENGINE PROTOCOL OUT_DIR [extra voxsam eval options...]
#   bash benchmarks/validation_split.sh sam3d center runs/val/sam3d_center
#   bash benchmarks/validation_split.sh classic center runs/val/classic_center
# Each dataset's summary.md / summary.json / results.csv lands in OUT_DIR/<dataset>/; reruns resume.
set -euo pipefail
ENGINE=${1:?engine}; PROTOCOL=${2:?protocol}; OUT=${3:?out dir}; shift 3
D=${VOXSAM_SHARED_DATA:-$(dirname "$0")/../../shared/data}
VOXSAM=${VOXSAM:-voxsam}
TS="$D/totalseg_ct/example_ct.nii.gz::$D/totalseg_ct/example_ct_seg_fast_force_split.nii.gz::$D/totalseg_ct/class_map_total_v2.json#total"
TSSM="$D/totalseg_ct/example_ct_sm.nii.gz::$D/totalseg_ct/example_ct_sm_seg.nii.gz::$D/totalseg_ct/class_map_total_v2.json#total"
SPLEEN="$D/spleen_ct/sub-spleen2_ct.nii.gz::$D/spleen_ct/sub-spleen2_ct_seg-manual.nii.gz"
COMMON=(--engine "$ENGINE" --protocol "$PROTOCOL" --clicks 1,3,5,10 "$@")
$VOXSAM eval "$D/la_mri" --max-cases 10 "${COMMON[@]}" --out "$OUT/la_mri"
$VOXSAM eval "$D/acdc_mri" --cases 'acdc_patient002_*,acdc_patient019_*,acdc_patient028_*' "${COMMON[@]}" --out "$OUT/acdc_mri"
$VOXSAM eval "$SPLEEN" "${COMMON[@]}" --out "$OUT/spleen_ct"
$VOXSAM eval "$TS" "$TSSM" --min-voxels 2000 "${COMMON[@]}" --out "$OUT/totalseg_ct"
