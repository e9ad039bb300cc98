"""Search strategies, one module each, registered in ``STRATEGIES``."""

from nasdeploy.search.base import STRATEGIES, SearchRequest, SearchResult, SearchStrategy
from nasdeploy.search import csnas, ctnas, hicdarts, icdarts, pcpdarts, senas  # noqa: F401  (register built-ins)

__all__ = ["STRATEGIES", "SearchRequest", "SearchResult", "SearchStrategy"]
