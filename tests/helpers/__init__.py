"""Test-only helpers (fake feature tables, quick bundles, example runs); nothing in src/ imports them."""
