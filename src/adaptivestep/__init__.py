"""adaptivestep: Process Reward Models with AdaptiveStep (confidence-based reasoning steps)."""

__version__ = "0.1.0"
