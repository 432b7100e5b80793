"""Simulated interaction: clicks land in the error region with the right label; boxes; the loss."""
from __future__ import annotations

import torch

from voxsam.training.config import InteractionSection
from voxsam.training.interaction import click_in, dice_ce, hard_dice, jittered_boxes, plan_step, sample_generators


def _masks():
    target = torch.zeros((2, 1, 12, 12, 12), dtype=torch.bool)
    target[:, :, 3:8, 3:8, 3:8] = True
    pred = torch.zeros_like(target)
    pred[0, 0, 3:8, 3:8, 3:6] = True  # sample 0: only false negatives
    pred[1] = target[1]
    pred[1, 0, 9:11, 9:11, 9:11] = True  # sample 1: only false positives
    return target, pred


def test_click_in_error_region_with_its_label():
    target, pred = _masks()
    for seed in range(20):
        pts, lab = click_in(target, pred, sample_generators(seed, [0, 1]))
        p0, p1 = pts[0, 0].long().tolist(), pts[1, 0].long().tolist()
        assert target[0, 0][tuple(p0)] and not pred[0, 0][tuple(p0)] and lab[0, 0] == 1
        assert pred[1, 0][tuple(p1)] and not target[1, 0][tuple(p1)] and lab[1, 0] == 0


def test_first_click_inside_target_and_seeded():
    target, _ = _masks()
    a = click_in(target, None, sample_generators(5, [10, 11]))
    b = click_in(target, None, sample_generators(5, [10, 11]))
    assert torch.equal(a[0], b[0]) and bool((a[1] == 1).all())
    c = [click_in(target[:1], None, sample_generators(s, [10]))[0] for s in range(6)]
    assert len({tuple(x.flatten().tolist()) for x in c}) > 1


def test_perfect_prediction_still_gets_a_positive_click():
    target, _ = _masks()
    pts, lab = click_in(target, target.clone(), sample_generators(0, [0, 1]))
    assert bool((lab == 1).all())


def test_jittered_boxes_are_near_the_bounding_box():
    target, _ = _masks()
    boxes = jittered_boxes(target, sample_generators(1, [0, 1]), jitter=0.1)
    assert boxes.shape == (2, 2, 3)
    assert torch.all(boxes[:, 0] <= boxes[:, 1])
    assert torch.all((boxes[:, 0] - 3).abs() <= 0.5 + 1e-6) and torch.all((boxes[:, 1] - 7).abs() <= 0.5 + 1e-6)
    exact = jittered_boxes(target, sample_generators(1, [0, 1]), jitter=0.0)
    assert torch.equal(exact[0], torch.tensor([[3.0, 3, 3], [7, 7, 7]]))


def test_loss_and_dice():
    target, pred = _masks()
    t = target.float()
    good = dice_ce(torch.where(target, 20.0, -20.0), t)
    bad = dice_ce(torch.where(target, -20.0, 20.0), t)
    assert float(good) < 0.01 < 1.5 < float(bad)
    d = hard_dice(pred, target)
    assert abs(float(d[0]) - 2 * 75 / (75 + 125)) < 1e-6
    assert float(hard_dice(torch.zeros_like(target), torch.zeros_like(target))[0]) == 1.0


def test_plan_is_deterministic_and_round_one_clicks():
    cfg = InteractionSection(rounds=6, mask_only_prob=0.5, box_prob=0.5)
    plans = [plan_step(0, s, 0, cfg) for s in range(40)]
    assert plans == [plan_step(0, s, 0, cfg) for s in range(40)]
    assert all(not p.mask_only[0] for p in plans)
    assert {p.box_start for p in plans} == {True, False}
