"""Figures for `dvc plots show` and the reports."""
