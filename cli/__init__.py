"""The `gguflm` command line (typer), installed as gguflm.cli."""
