"""Search strategies, one folder each, registered in ``STRATEGIES``.

The contract and the context: ``base`` (``SearchStrategy``), ``request`` (``SearchRequest``, ``SearchResult``,
``STRATEGIES``), ``context`` (``SearchContext``), ``settings``. The parts several strategies share: ``shared/``.
One folder per strategy (its config, its run, its paper-specific parts), imported on the line below.
"""

from nasdeploy.search.base import STRATEGIES, SearchRequest, SearchResult, SearchStrategy
from nasdeploy.search import csnas, ctnas, hierarchical, icdarts, pcpdarts, senas  # noqa: F401  (register built-ins)

__all__ = ["STRATEGIES", "SearchRequest", "SearchResult", "SearchStrategy"]
