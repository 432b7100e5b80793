"""Training of the promptable models: a family-agnostic, resumable and distributed loop (`trainer`) driven by
model families (`family`, `registry`; built in: sam3d - data pipeline, label-map synthesis, simulated
interaction). Entry point: `voxsam train CONFIG.yaml [key.path=value ...]`."""
