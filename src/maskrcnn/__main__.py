"""`python -m maskrcnn ...` (also what `torchrun -m maskrcnn train ...` runs)."""
import sys

from .cli import main

sys.exit(main())
