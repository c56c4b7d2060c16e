#!/usr/bin/env python3
"""KiloNeRF viewer: ``python run_viewer.py [--scene PATH.kilo] [--backend auto|cuda|torch] [--size WxH]``.

Headless export: ``--headless --screenshot OUT.png [--camera CAM.json]`` or
``--headless --turntable OUT.mp4 --frames N --fps F --size WxH``; ``--bench`` measures FPS.
See docs/viewer.md.
"""

import sys

from app.cli import main

if __name__ == "__main__":
    sys.exit(main())
