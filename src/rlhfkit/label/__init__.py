"""`rlhfkit label`: people compare and rate responses in a local web app (see label/cli.py).

db.py       the project's SQLite file: items, annotators, assignments, votes
sources.py  items from a run directory or a JSONL file
app.py      the FastAPI app: annotator pages, admin page, export, the security checks
agreement.py  Cohen's κ, Krippendorff's α, majority agreement, Wilson / mean intervals (pure)
results.py  votes → agreement figures, preference records, the human evaluation
cli.py      serve / stats / export
loop.py     `ppo.reward_refresh.labeler: web`: a refresh round's labels from its project
"""
