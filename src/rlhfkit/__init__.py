"""rlhfkit: SFT -> reward model -> PPO, readable and correct."""

__version__ = "0.1.0"
