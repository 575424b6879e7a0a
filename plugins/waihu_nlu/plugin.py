"""The pluggy entry point of waihu_nlu: registers the ``keywords`` and ``trained`` classifiers."""

from __future__ import annotations

from waihu.api import Provider, hookimpl
from waihu_nlu.keywords import KeywordClassifier
from waihu_nlu.trained import TrainedClassifier

__all__ = ["waihu_nlu_types"]


@hookimpl
def waihu_nlu_types() -> list[type[Provider]]:
    """The intent classifiers this plugin provides."""
    return [KeywordClassifier, TrainedClassifier]
