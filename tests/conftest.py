"""Shared fixtures: paths of the repository and a fresh plugin manager per test."""

from __future__ import annotations

from pathlib import Path

import pluggy
import pytest

from waihu.plugins import collect_provider_types, make_plugin_manager

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "etc" / "waihu" / "scripts"


@pytest.fixture
def pm() -> pluggy.PluginManager:
    return make_plugin_manager()


@pytest.fixture
def provider_types(pm: pluggy.PluginManager) -> dict:
    return collect_provider_types(pm)
