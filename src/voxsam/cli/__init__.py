"""The `voxsam` command line (typer + rich). Heavy imports happen inside commands."""
