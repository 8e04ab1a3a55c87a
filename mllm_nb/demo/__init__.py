"""Offline demo mode: synthetic data and the tiny trained fixture models (their training scripts: fixtures/)."""

from mllm_nb.demo.mode import DEMO_ENV_VAR, FIXTURES_DIR, demo_banner, fixture_path, is_demo, resolve_model

__all__ = ["DEMO_ENV_VAR", "FIXTURES_DIR", "demo_banner", "fixture_path", "is_demo", "resolve_model"]
