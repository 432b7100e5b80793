"""Evaluation: metrics (Dice, IoU, NSD, HD95), click protocols, the benchmark runner and its reports.

Submodules are imported on use so that importing this package stays cheap:
  metrics    Dice, IoU, NSD, HD95            protocols  seeded click simulators over a Session
  sources    dataset folders / file pairs     plan       EvalConfig, targets of a run
  records    run.json and per-target records  parallel   worker processes, torchrun ranks
  runner     engine building, run_eval        report     CSV, Markdown, JSON, plots
Dependencies point one way (runner -> parallel -> records -> plan -> sources; report -> plan); none imports runner.
"""
