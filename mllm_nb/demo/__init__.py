"""Offline demo mode: synthetic data, the tiny trained fixture models and their training scripts."""

from mllm_nb.demo.mode import DEMO_ENV_VAR, FIXTURES_DIR, demo_banner, fixture_path, is_demo, resolve_model

__all__ = ["DEMO_ENV_VAR", "FIXTURES_DIR", "demo_banner", "fixture_path", "is_demo", "resolve_model"]
