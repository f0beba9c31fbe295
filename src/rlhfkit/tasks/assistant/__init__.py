"""The bundled assistant task (SmolLM2-135M-Instruct): its gold judge so far (gold.py)."""
