"""2D check of slice2d decoders on the held-out hn_ct cases, through the engine's own code path
(prepare_volume + SliceModel.segment, acquisition axis). Per organ: the middle slice and the second slice from
the lower end; prompts: the slice's own box, the neighbour slice's box + 4 px (propagation's box), the
neighbour's mask (propagation's mask), both, one interior click. Slice embeddings are cached in EMB_CACHE.
    .venv/bin/python benchmarks/slice2d_val2d.py OUT.json released=- finetuned=PATH [more=PATH ...]"""
import copy, json, sys
from pathlib import Path
import numpy as np, torch
torch.set_num_threads(2)
from voxsam.io.datasets import open_dataset
from voxsam.engines.base import acquisition_axis
from voxsam.engines.slice2d.slices import SliceModel, prepare_volume, bbox_rc, dice2d
from voxsam.engines.slice2d.engine import load_decoder
from voxsam.models.sam2d import load_litemedsam
from voxsam.training.slice2d_prompts import interior_pixels

VAL = ["openkbp_pt055", "openkbp_pt057", "openkbp_pt058", "openkbp_pt059", "openkbp_pt060", "openkbp_pt061",
       "openkbp_pt062", "openkbp_pt064", "openkbp_pt065", "openkbp_pt066", "openkbp_pt067", "openkbp_pt068"]
EMB_CACHE = Path("cache/slice2d_val2d_embeddings.pt")
out_path = sys.argv[1]
base = load_litemedsam()
models = {}
for arg in sys.argv[2:]:
    name, path = arg.split("=", 1)
    m = copy.deepcopy(base)
    if path != "-":
        load_decoder(m, path)
    models[name] = SliceModel(m)
store = torch.load(EMB_CACHE, weights_only=False) if EMB_CACHE.is_file() else {}
ds = open_dataset("../shared/data/hn_ct_openkbp")
scores = {m: {} for m in models}
for cid in VAL:
    case = ds.case(cid)
    img = case.load_image()
    lab = np.ascontiguousarray(case.load_label(img).array)
    img.array = np.ascontiguousarray(img.array)
    prep = prepare_volume(img, 512)
    axis = acquisition_axis(img.affine)
    view = prep.view(axis)
    jobs = []
    dirty = False
    for v in [int(x) for x in np.unique(lab) if x]:
        counts = (np.moveaxis(lab, axis, 0) == v).reshape(lab.shape[axis], -1).sum(1)
        valid = np.flatnonzero(counts >= 20)
        if len(valid) >= 3:
            mid = int(valid[len(valid) // 2])
            jobs += [(v, "mid", mid, mid - 1), (v, "end", int(valid[1]), int(valid[2]))]
    for v, where, k, nb in jobs:
        key = (cid, axis, k)
        if key not in store:
            emb, geom = next(iter(models.values())).embedding(prep, axis, k)
            store[key] = (emb.half(), geom)
            dirty = True
        prep.embeddings[(axis, k, prep.lo, prep.hi)] = store[key]
        gt = view.take(lab, k) == v
        prev = view.take(lab, nb) == v
        if not prev.any():
            continue
        rc = interior_pixels(gt, np.random.default_rng(k * 31 + v), 1, 0.5)
        prompts = {"own_box": dict(box_rc=bbox_rc(gt)),
                   "nb_box+4": dict(box_rc=bbox_rc(prev), box_expand_px=4.0),
                   "nb_mask": dict(mask=prev),
                   "nb_box+4_mask": dict(box_rc=bbox_rc(prev), mask=prev, box_expand_px=4.0),
                   "click": dict(points_rc=rc, labels=np.ones(1, np.int64))}
        for name, m in models.items():
            for p, kw in prompts.items():
                out, _ = m.segment(prep, axis, k, **kw)
                scores[name].setdefault(f"{where}/{p}", []).append(dice2d(out, gt))
    if dirty:
        torch.save(store, EMB_CACHE)
    print(cid, {m: round(float(np.mean([x for s in scores[m].values() for x in s])), 3) for m in models}, flush=True)
summary = {m: {k: round(float(np.mean(s)), 4) for k, s in sorted(scores[m].items())} for m in models}
for m in models:
    summary[m]["all"] = round(float(np.mean([x for s in scores[m].values() for x in s])), 4)
first = next(iter(models))
summary["n_slices"] = {k: len(s) for k, s in sorted(scores[first].items())}
print(json.dumps(summary, indent=1))
Path(out_path).write_text(json.dumps(summary, indent=1))
