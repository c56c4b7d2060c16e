"""`python -m trainer` entry point (see `trainer.cli`)."""

import os
import sys

# Sleeping (not spinning) OpenMP workers: on a machine shared with other jobs, spinning torch threads made
# every stage several times slower. Set OMP_WAIT_POLICY yourself to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from trainer.allocator import keep_freed_memory  # noqa: E402
from trainer.cli import main  # noqa: E402

# Process-wide, like the line above: glibc keeps a step's freed tensors mapped for the next step.
keep_freed_memory()

if __name__ == "__main__":
    sys.exit(main())
