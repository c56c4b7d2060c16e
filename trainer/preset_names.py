"""The names of the training presets: the one list that the CLI, the viewer's launcher and
`trainer.presets.PRESETS` share (a light module without torch, so the viewer can import it at start-up;
tests/test_trainer_input.py pins it to the keys of `PRESETS`)."""

PRESET_NAMES: tuple[str, ...] = ("tiny", "cpu", "cpu-hd", "gpu", "paper")
"""Every preset, cheapest first: tiny (tests), cpu (lego 200x200 on 2 cores), cpu-hd (lego 800x800 on
2 cores), gpu (full resolution on one GPU), paper (the KiloNeRF paper's schedule)."""
