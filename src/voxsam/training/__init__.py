"""Training of the promptable models (sam3d): data pipeline, label-map synthesis, simulated interaction,
resumable and distributed loop. Entry point: `voxsam train CONFIG.yaml [key.path=value ...]`."""
