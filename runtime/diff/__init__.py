"""The accuracy diff against PyTorch (ptdit-diff): an artifact's (artifact_diff.py) or a pipeline folder's
(pipeline_diff.py), the metrics and thresholds (metrics.py), and the table and plot (report.py)."""
