"""Helpers the tests share: generated data, a private PostgreSQL server, fake sources."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository
