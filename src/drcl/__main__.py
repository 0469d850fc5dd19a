"""`python -m drcl` runs the CLI."""

from drcl.cli import app

app(prog_name="drcl")
