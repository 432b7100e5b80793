"""memory3d engine: with an untrained memory it is slice2d exactly; a trained (here: perturbed) memory changes
the propagated slices and every decided slice joins the bank; options and weights errors."""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from voxsam.errors import CheckpointError, ConfigError  # noqa: E402
from voxsam.io.volume import Volume  # noqa: E402
from voxsam.prompts import Box, Change, PromptSet, SliceRef  # noqa: E402


@pytest.fixture(scope="module")
def litemedsam() -> Iterator[object]:
    from voxsam.errors import CheckpointError as Missing
    from voxsam.models.sam2d import load_litemedsam

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield load_litemedsam().float().eval()
    except Missing as exc:
        pytest.skip(f"LiteMedSAM weights are not installed: {exc}")
    finally:
        torch.set_num_threads(threads)


def _organ() -> tuple[Volume, np.ndarray]:
    """A bright ellipsoid in noisy soft tissue, 3 mm slices along axis 2 (6 slices hold it)."""
    rng = np.random.default_rng(0)
    grid = np.indices((64, 64, 12)).astype(float)
    inside = ((grid[0] - 32) / 14) ** 2 + ((grid[1] - 30) / 10) ** 2 + ((grid[2] - 6) / 3.2) ** 2 <= 1
    image = rng.normal(40, 8, inside.shape) + 160 * inside
    return Volume(image.astype(np.int16), np.diag([1.0, 1.0, 3.0, 1.0]), modality="CT"), inside


def _run(engine, prepared, prompts) -> tuple[list[int], np.ndarray]:
    steps = engine.propagate(prepared, prompts, None, Change(added=(prompts.boxes[-1],)))
    order = []
    try:
        while True:
            k, _ = next(steps)
            order.append(k)
    except StopIteration as done:
        return order, done.value.mask


def _speaking_memory(litemedsam):
    """A memory model whose memory changes the masks: non-zero output projections."""
    from voxsam.models.memory3d import build_memory3d

    trained = build_memory3d("litemedsam_mem", sam2d=litemedsam, memory_pool=4)
    with torch.no_grad():
        for _, p in trained.memory_attention.named_parameters():
            if p.dim() > 1 and float(p.abs().max()) == 0.0:
                p.normal_(0, 0.05, generator=torch.Generator().manual_seed(1))
    return trained


def test_untrained_memory_is_slice2d_exactly_and_a_trained_one_conditions_every_slice(litemedsam) -> None:
    from voxsam.engines.memory3d import Memory3DEngine
    from voxsam.engines.slice2d import Slice2DEngine
    from voxsam.models.memory3d import build_memory3d

    volume, organ = _organ()
    box = Box((20.0, 21.0, 6.0), (44.0, 39.0, 6.0), SliceRef(2, 6))
    prompts = PromptSet(boxes=(box,))
    # the stability rule off for both: this small phantom's end slices are a few unsure pixels
    base = Slice2DEngine(model=litemedsam, min_stability=0.0)
    prepared = base.prepare(volume)  # shared: both engines read the same cached embeddings
    order2d, mask2d = _run(base, prepared, prompts)
    fresh = Memory3DEngine(model=litemedsam, memory=build_memory3d("litemedsam_mem", sam2d=litemedsam, memory_pool=4),
                           stop_iou=0.55, min_stability=0.0, intensity_agreement=0.6)  # slice2d's stopping rule
    order3d, mask3d = _run(fresh, prepared, prompts)
    assert order3d == order2d and len(order2d) >= 4
    np.testing.assert_array_equal(mask3d, mask2d)
    dice = 2 * (mask2d & organ).sum() / (mask2d.sum() + organ.sum())
    assert dice > 0.6, dice

    engine = Memory3DEngine(model=litemedsam, memory=_speaking_memory(litemedsam), memory_agreement=0.0)
    accepted: list[int] = []
    original = engine._accept
    engine._accept = lambda context, k, result: (accepted.append(len(context.memories)), original(context, k, result))[1]  # type: ignore[method-assign]
    order, mask = _run(engine, prepared, prompts)
    assert order[0] == 6 and len(accepted) == len(order) - 1
    assert accepted == list(range(1, len(order)))  # the anchor, then every decided slice, joins the bank
    assert not np.array_equal(mask, mask2d)  # the memory changed the propagated slices


def test_memory_agreement_keeps_the_memory_free_mask_where_the_two_disagree(litemedsam) -> None:
    from voxsam.engines.memory3d import Memory3DEngine
    from voxsam.engines.slice2d import Slice2DEngine

    volume, _ = _organ()
    prompts = PromptSet(boxes=(Box((20.0, 21.0, 6.0), (44.0, 39.0, 6.0), SliceRef(2, 6)),))
    prepared = Slice2DEngine(model=litemedsam).prepare(volume)
    memory = _speaking_memory(litemedsam)
    _, with_memory = _run(Memory3DEngine(model=litemedsam, memory=memory, memory_agreement=0.0), prepared, prompts)
    _, without = _run(Memory3DEngine(model=litemedsam, memory=memory, use_memory=False), prepared, prompts)
    assert not np.array_equal(with_memory, without)
    # a floor of 1: only a memory mask identical to the memory-free one is kept, so the walk is the memory-free one
    _, strict = _run(Memory3DEngine(model=litemedsam, memory=memory, memory_agreement=1.0), prepared, prompts)
    np.testing.assert_array_equal(strict, without)



def test_memory_blend_weighs_the_memory_free_decode_into_the_logits(litemedsam) -> None:
    """`memory_blend` w: a propagated slice's logits and predicted IoU are (1 - w) x the memory decode + w x the
    memory-free one (here slice2d's, `agreement_reference=slice2d`); checked on the first propagated slice, whose
    bank (the prompted slice) and prompt are the same with and without the blend."""
    from voxsam.engines.memory3d import Memory3DEngine

    volume, _ = _organ()
    prompts = PromptSet(boxes=(Box((20.0, 21.0, 6.0), (44.0, 39.0, 6.0), SliceRef(2, 6)),))
    memory = _speaking_memory(litemedsam)
    first: dict[float, tuple] = {}
    for blend in (0.0, 0.25):
        engine = Memory3DEngine(model=litemedsam, memory=memory, agreement_reference="slice2d", memory_blend=blend,
                                memory_agreement=0.0, min_stability=0.0, cross_views=False)
        segment_with = engine.slices.segment_with

        def spy(*args, decode=None, _blend=blend, _segment=segment_with, **kwargs):
            def recorded(emb, **given):
                out = decode(emb, **given)
                first.setdefault(_blend, (emb, given, out))
                return out
            return _segment(*args, decode=recorded if decode is not None else None, **kwargs)

        engine.slices.segment_with = spy  # type: ignore[method-assign]
        _run(engine, engine.prepare(volume), prompts)
    emb, given, (memory_low, memory_iou) = first[0.0]
    with torch.inference_mode():
        plain_low, plain_iou = litemedsam.decode(emb, **given)
    blended_low, blended_iou = first[0.25][2]
    assert not torch.allclose(memory_low, plain_low, atol=1e-3)
    torch.testing.assert_close(blended_low, 0.75 * memory_low + 0.25 * plain_low, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(blended_iou, 0.75 * memory_iou + 0.25 * plain_iou, atol=1e-4, rtol=1e-4)

def test_agreement_reference_slice2d_falls_back_to_slice2d_s_own_walk(litemedsam) -> None:
    """`agreement_reference=slice2d`: the memory-free mask is slice2d's (no learned no-memory embedding), so with
    a floor of 1 and slice2d answering the prompted slice the walk is slice2d's (the same stride rule); the
    memory model's own memory-free decode differs once its no-memory embedding is not zero."""
    from voxsam.engines.memory3d import Memory3DEngine
    from voxsam.engines.slice2d import Slice2DEngine

    volume, _ = _organ()
    prompts = PromptSet(boxes=(Box((20.0, 21.0, 6.0), (44.0, 39.0, 6.0), SliceRef(2, 6)),))
    base = Slice2DEngine(model=litemedsam)
    prepared = base.prepare(volume)
    _, mask2d = _run(base, prepared, prompts)
    memory = _speaking_memory(litemedsam)
    with torch.no_grad():
        memory.memory_attention.no_memory.normal_(0, 0.5, generator=torch.Generator().manual_seed(2))
    strict = dict(model=litemedsam, memory=memory, memory_agreement=1.0, prompt_decoder="slice2d")
    _, referenced = _run(Memory3DEngine(agreement_reference="slice2d", **strict), prepared, prompts)
    np.testing.assert_array_equal(referenced, mask2d)
    _, own = _run(Memory3DEngine(agreement_reference="no_memory", **strict), prepared, prompts)
    assert not np.array_equal(own, mask2d)


def test_registry_options_and_weights_errors(tmp_path) -> None:
    from voxsam.engines import ENGINES, engine_spec
    from voxsam.engines.memory3d import Memory3DOptions
    from voxsam.engines.options import parse_options

    assert "memory3d" in ENGINES and engine_spec("memory3d").capabilities.propagates
    options = parse_options(engine_spec("memory3d"), {"use_memory": "false", "stop_iou": "0.5"})
    assert isinstance(options, Memory3DOptions) and options.use_memory is False
    with pytest.raises(ConfigError, match="memory_pool"):
        parse_options(engine_spec("memory3d"), {"memory_pool": 4})
    from voxsam.engines.memory3d.engine import load_memory_model

    with pytest.raises(CheckpointError, match="no such"):
        load_memory_model(Memory3DOptions(memory_weights=tmp_path / "missing.pt"), None)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        load_memory_model(Memory3DOptions(memory_weights=junk), None)


def test_an_edit_keeps_the_earlier_prompted_slice_as_a_conditioning_memory(litemedsam) -> None:
    from voxsam.engines.memory3d import Memory3DEngine
    from voxsam.models.memory3d import build_memory3d

    volume, organ = _organ()
    engine = Memory3DEngine(model=litemedsam, memory=build_memory3d("litemedsam_mem", sam2d=litemedsam, memory_pool=4))
    prepared = engine.prepare(volume)
    first = Box((20.0, 21.0, 6.0), (44.0, 39.0, 6.0), SliceRef(2, 6))
    correction = Box((22.0, 23.0, 4.0), (42.0, 37.0, 4.0), SliceRef(2, 4))
    prompts = PromptSet(boxes=(first, correction))
    view = prepared.view(2)
    start = view.to_display(organ[:, :, 4])
    remembered: dict[int, np.ndarray] = {}
    memorize = engine._memorize

    def spy(emb, geom, display, k, conditioning):
        remembered[k] = display
        return memorize(emb, geom, display, k, conditioning)

    engine._memorize = spy  # type: ignore[method-assign]
    bank = engine._chain_context(prepared, 2, 4, start, {}, prompts, organ)
    assert sorted((int(m.index), m.conditioning) for m in bank.memories) == [(4, True), (6, True)]
    # the old mask's slice 6, in display orientation (the same as the slice's image), not transformed twice
    np.testing.assert_array_equal(remembered[6], view.take(organ, 6))
    fresh = engine._chain_context(prepared, 2, 4, start, {}, prompts, None)  # no old mask: nothing to remember
    assert [int(m.index) for m in fresh.memories] == [4]


def test_slice_step_puts_decided_slices_one_apart_in_the_bank(litemedsam) -> None:
    """With `slice_step` 2 the walk decides every other slice; their memories sit at index / 2, so the offsets
    the memory attention sees between decided neighbours are 1, as in training."""
    from voxsam.engines.memory3d import Memory3DEngine
    from voxsam.models.memory3d import build_memory3d

    volume, organ = _organ()
    prompts = PromptSet(boxes=(Box((20.0, 21.0, 6.0), (44.0, 39.0, 6.0), SliceRef(2, 6)),))
    engine = Memory3DEngine(model=litemedsam, memory=build_memory3d("litemedsam_mem", sam2d=litemedsam, memory_pool=4),
                            min_stability=0.0, slice_step=2)
    decided: list[tuple[int, float]] = []
    original = engine._accept
    engine._accept = lambda context, k, result: (decided.append((k, context.position(k))), original(context, k, result))[1]  # type: ignore[method-assign]
    order, mask = _run(engine, engine.prepare(volume), prompts)
    assert sorted(order) == list(range(min(order), max(order) + 1)) and len(order) >= 5  # every slice, once
    ks = {k for k, _ in decided}
    assert {4, 8} <= ks and not {5, 7} & ks, decided  # jumps of 2 from the prompted slice 6; 5, 7 interpolated
    assert all(p == k / 2 for k, p in decided)
    dice = 2 * (mask & organ).sum() / (mask.sum() + organ.sum())
    assert dice > 0.6, dice


@pytest.mark.parametrize("prompt_decoder", ["memory", "slice2d"])
def test_prompt_decoder_chooses_who_answers_the_prompted_slice(litemedsam, prompt_decoder) -> None:
    """`prompt_decoder`: the prompted slice is decoded by memory3d's decoder or by slice2d's; the propagated
    slices always by the memory model."""
    from voxsam.engines.memory3d import Memory3DEngine
    from voxsam.models.memory3d import build_memory3d

    volume, _ = _organ()
    prompts = PromptSet(boxes=(Box((20.0, 21.0, 6.0), (44.0, 39.0, 6.0), SliceRef(2, 6)),))
    memory = build_memory3d("litemedsam_mem", sam2d=litemedsam, memory_pool=4)
    engine = Memory3DEngine(model=litemedsam, memory=memory, prompt_decoder=prompt_decoder, min_stability=0.0, cross_views=False)
    calls = {"memory": 0, "slice2d": 0}

    def counted(name, decode):
        return lambda *a, **kw: (calls.__setitem__(name, calls[name] + 1), decode(*a, **kw))[1]

    memory.decode = counted("memory", memory.decode)  # type: ignore[method-assign]
    engine.slices.model = type("Counted", (), {"decode": staticmethod(counted("slice2d", litemedsam.decode)),
                                               "__getattr__": lambda self, n: getattr(litemedsam, n)})()
    order, _ = _run(engine, engine.prepare(volume), prompts)
    assert len(order) >= 4
    # every propagated slice (and the one past each end) goes through the memory model
    if prompt_decoder == "slice2d":
        assert calls["slice2d"] == 1 and calls["memory"] >= len(order) - 1
    else:
        assert calls["slice2d"] == 0 and calls["memory"] >= len(order)


def test_a_memory_file_with_an_encoder_tail_encodes_through_it(tmp_path) -> None:
    from voxsam.engines.memory3d import Memory3DEngine
    from voxsam.models.memory3d import build_memory3d, save_memory3d

    try:
        plain = Memory3DEngine(memory=build_memory3d("litemedsam_mem", memory_pool=4))
    except CheckpointError as exc:
        pytest.skip(f"LiteMedSAM weights are not installed: {exc}")
    released = plain.slices.model.state_dict()
    tail_keys = [k for k in released if k.startswith("image_encoder.neck.")]
    memory = build_memory3d("litemedsam_mem", memory_pool=4)
    memory.encoder_tail = {k: released[k].float() * 0.5 for k in tail_keys}
    path = save_memory3d(memory, tmp_path / "with_tail.pt")
    engine = Memory3DEngine(memory_weights=path)
    own = engine.slices.model.state_dict()
    assert tail_keys and all(torch.equal(own[k], (released[k].float() * 0.5).half().float()) for k in tail_keys)
    assert engine.memory.encoder_tail is not None
    untouched = [k for k in released if k.startswith("image_encoder.") and k not in tail_keys]
    assert all(torch.equal(own[k], released[k]) for k in untouched)


def test_step_max_mm_grows_the_stride_with_memories_still_at_index_over_the_base_stride(litemedsam) -> None:
    """`step_max_mm`: along a straight cylinder (1 mm slices, base stride 2) the walk's jumps grow beyond the base
    stride as slice2d's do, fewer slices are encoded, and every memory still sits at slice index / 2 (a jump of
    4 slices is an offset of 2 in the bank); the mask stays that of the fixed stride."""
    from voxsam.engines.memory3d import Memory3DEngine

    shape = (64, 64, 30)
    grid = np.indices(shape).astype(float)
    cylinder = (np.hypot(grid[0] - 32, grid[1] - 30) <= 10) & (grid[2] >= 3) & (grid[2] < 27)
    image = np.random.default_rng(0).normal(40, 8, shape) + 160 * cylinder
    volume = Volume(image.astype(np.int16), np.diag([1.0, 1.0, 1.0, 1.0]), modality="CT")
    prompts = PromptSet(boxes=(Box((21.0, 19.0, 14.0), (43.0, 41.0, 14.0), SliceRef(2, 14)),))
    runs = {}
    for grow in (None, 8.0):
        engine = Memory3DEngine(model=litemedsam, memory=_speaking_memory(litemedsam), slice_step=2, step_max_mm=grow,
                                step_grow_dice=0.9, cross_views=False)
        decided: list[tuple[int, float]] = []
        original = engine._accept
        engine._accept = lambda context, k, result: (decided.append((k, context.position(k))), original(context, k, result))[1]  # type: ignore[method-assign]
        order, mask = _run(engine, engine.prepare(volume), prompts)
        assert sorted(order) == list(range(min(order), max(order) + 1)), (grow, order)
        assert all(p == k / 2 for k, p in decided), decided
        ks = sorted([14] + [k for k, _ in decided])
        runs[grow] = (mask, len(decided), int(np.diff(ks).max()))
    (fixed, n_fixed, gap_fixed), (grown, n_grown, gap_grown) = runs[None], runs[8.0]
    assert gap_fixed == 2 and gap_grown >= 4 and n_grown < n_fixed, (runs[None][1:], runs[8.0][1:])
    dice = 2 * (fixed & grown).sum() / (fixed.sum() + grown.sum())
    assert dice > 0.95, dice
