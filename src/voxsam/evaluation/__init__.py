"""Evaluation: metrics (Dice, IoU, NSD, HD95), click protocols, the benchmark runner and its reports.

Submodules are imported on use (`voxsam.evaluation.metrics`, `.protocols`, `.runner`, `.report`) so that
importing this package stays cheap.
"""
