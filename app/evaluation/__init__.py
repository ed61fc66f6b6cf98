"""`python -m app.eval`: retrieval quality on BEIR folders, answer quality on question files.

beir.py (read a BEIR folder) · corpus.py (the corpus as files, ingested by the app's own sync)
· metrics.py (nDCG, Recall, MRR) · baselines.py (bm25s, exact numpy search) · runs.py (the
retrieval modes, timed) · report.py (table, JSON, plot) · answers.py (the chat chain on
questions).
"""
