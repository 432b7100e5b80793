"""Geometry and intensity transforms. Geometry lives in `voxsam.transforms.geometry` only."""
