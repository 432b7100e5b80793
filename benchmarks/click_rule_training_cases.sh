#!/usr/bin/env bash
# How the slice engines answer a click alone, chosen on *training-split* cases only (never the held-out ones):
# one click (`center`) on 5 la_mri, 5 hn_ct_openkbp and 3 acdc_mri patients (both frames) of the training
# splits, for a decoder file (default: the bundled one) under several click rules; each run in its own folder.
#   bash benchmarks/click_rule_training_cases.sh OUT_DIR DECODER.pt|bundled [RUN ...]   (default: every RUN below)
#   python benchmarks/compare_runs.py a=OUT_DIR/slice2d_hn_wide b=OUT_DIR/slice2d_hn_soft ...
set -euo pipefail
OUT=${1:?out dir}; DECODER=${2:?decoder file or "bundled"}; shift 2
RUNS=("$@")
D=${VOXSAM_SHARED_DATA:-$(dirname "$0")/../../shared/data}
VOXSAM=${VOXSAM:-voxsam}
LA=la_4498CA6DZWELOXCBRYRF,la_57SGAJMLCTCH92QUA0EE,la_5QFK2PMHNX7UALK52NNA,la_78NJ5YFQF72BGC8RO51C,la_8ZG2TRZ81MAWHZPN9KKG
HN=openkbp_pt010,openkbp_pt020,openkbp_pt030,openkbp_pt040,openkbp_pt050
ACDC='acdc_patient030_*,acdc_patient039_*,acdc_patient045_*'
DEC=(); [ "$DECODER" != bundled ] && DEC=(--engine-option "decoder=$DECODER")
run() {  # NAME ENGINE [engine options...] : the three datasets
  local name=$1 engine=$2; shift 2
  if [ ${#RUNS[@]} -gt 0 ] && [[ ! " ${RUNS[*]} " == *" ${engine}_$name "* ]]; then return; fi
  local opts=("${DEC[@]}"); for o in "$@"; do opts+=(--engine-option "$o"); done
  for set in "la la_mri $LA" "hn hn_ct_openkbp $HN" "acdc acdc_mri $ACDC"; do
    read -r short data cases <<<"$set"
    $VOXSAM eval "$D/$data" --cases "$cases" --engine "$engine" --protocol center --clicks 1 "${opts[@]}" \
      --out "$OUT/${engine}_${short}_$name"
  done
}
# CT window: RadSAM's [-500, 1000] HU ("wide") or LiteMedSAM's soft-tissue [-160, 240] ("soft"); MRI ignores it.
# slice2d's rules of the time these ran are pinned (the stopping rule, click sizes and cross views came after them).
WIDE=ct_window=-500,1000; SOFT=ct_window=-160,240
OLDSTOP=(stop_iou=0.55 min_stability=0 intensity_agreement=0.6); GROW=(click_box_mm=20,40,80 click_grow_iou=0.1)
run wide slice2d $WIDE "${OLDSTOP[@]}" "${GROW[@]}" cross_views=false
run soft slice2d $SOFT "${OLDSTOP[@]}" "${GROW[@]}" cross_views=false
run soft_argmax160 slice2d $SOFT "${OLDSTOP[@]}" click_box_mm=20,40,80,160 click_grow_iou=0 cross_views=false
run defaults slice2d cross_views=false          # the defaults of 2026-12-05 (third session)
run crossviews slice2d                          # the defaults now: the walk bounded by the two cross slices
run wide memory3d $WIDE cross_views=false
run soft memory3d $SOFT cross_views=false
run soft_slice2dprompt memory3d $SOFT prompt_decoder=slice2d cross_views=false
run soft_crossviews memory3d $SOFT
# past the cross views, the walk goes on while the model is sure (thirteenth session; chosen on the stopping-rule
# trace: benchmarks/past_cross_views.py), alone and with the trace's best base rule; neither kept (docs/benchmarks.md)
run pastviews slice2d past_views_stability=0.9
run pastviews_rules slice2d past_views_stability=0.9 intensity_agreement=0.6 stability_grace=0
# a click alone may also try a 240 mm box (a liver or a lung is wider than 160 mm; thirteenth session; not kept)
run bigbox slice2d click_box_mm=20,40,80,160,240
# a longer fixed stride on thin slices (step_mm 5 / 7.5: every 8th / 12th slice of la_mri; only la was run) and
# the walk's stride growing along a steady shape (step_max_mm; fourteenth session), at two Dice thresholds
run step5mm slice2d step_mm=5
run step7p5mm slice2d step_mm=7.5
run grow10 slice2d step_max_mm=10
run grow10_dice90 slice2d step_max_mm=10 step_grow_dice=0.9
# the stride also grows where the shape changes steadily, on thin slices (eighteenth session; the MRI of la only
# is thin enough: hn and acdc walks are those of `crossviews`)
run grow10_steady slice2d step_grow_steady=true
# memory3d on slice2d's encoder tail (configs/memory3d_tail.yaml; sixteenth session), alone and with each propagated
# slice's mask checked against the memory-free one (memory_agreement: below that Dice the memory-free mask is kept)
M3T=(memory_weights=runs/memory3d_tail.pt click_box_mm=20,40,80,160)
run tail memory3d "${M3T[@]}"
run tail_agree50 memory3d "${M3T[@]}" memory_agreement=0.5
run tail_agree80 memory3d "${M3T[@]}" memory_agreement=0.8
# the check against slice2d's own answer (agreement_reference=slice2d: the plain embedding, no learned no-memory
# embedding), with slice2d's decoder answering the prompted slice and the cross views (prompt_decoder=slice2d);
# seventeenth session, the bundled memory file
run ref_slice2d_agree50 memory3d prompt_decoder=slice2d agreement_reference=slice2d memory_agreement=0.5
run ref_slice2d_agree80 memory3d prompt_decoder=slice2d agreement_reference=slice2d memory_agreement=0.8
# the bundled memory trained on with windows at the engines' stride (configs/memory3d_strided.yaml), engine defaults
run strided memory3d memory_weights=runs/memory3d_strided.pt
# the bundled memory file of the eighteenth session (configs/memory3d_tail_strided.yaml) with the engine's defaults,
# and each propagated slice's logits blended with the memory-free decode (memory_blend: an ensemble of the two
# answers), that of the memory model (its no-memory embedding) or slice2d's (nineteenth session)
run engine_defaults memory3d
run blend50 memory3d memory_blend=0.5
run blend50_ref_slice2d memory3d agreement_reference=slice2d memory_blend=0.5
