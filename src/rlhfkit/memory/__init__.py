"""Memory planning for the four-model RLHF setup: `rlhfkit plan` and the pre-flight check.

shapes.py   model shapes from presets or a local config.json
terms.py    the byte formulas, one pure function per term (docs/memory.md derives each)
plan.py     per-phase, per-device plan (generation, experience, update) for PPO; SFT and RM
advice.py   fits or not, smallest device count, cheapest changes that make it fit
inputs.py   RunConfig (+ launcher flags) -> planner inputs
devices.py  named GPUs, size parsing, detected devices
report.py   rich tables and the one-line verdict; cli.py: `rlhfkit plan`; preflight.py
measure.py  live tensor bytes, for bench/memory_plan.py
"""
