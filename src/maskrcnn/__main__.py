"""`python -m maskrcnn ...` (also what `torchrun -m maskrcnn train ...` runs)."""
from .cli import run

run()
