"""Tuning on Optuna: the study, its storage, a trial's objective and tune's reports."""
