"""``python -m renderer``: see ``renderer.cli``."""

import os
import sys

# Sleeping (not spinning) OpenMP workers: on a machine shared with other jobs, spinning torch threads made
# renders several times slower. Set OMP_WAIT_POLICY yourself to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from renderer.cli import main  # noqa: E402

sys.exit(main())
