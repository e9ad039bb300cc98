"""The strategy contract: ``nasdeploy search --strategy NAME`` looks NAME up here and calls ``run``.

A strategy is one module that subclasses ``SearchStrategy`` and registers itself::

    @STRATEGIES.register("mystrategy")
    class MyStrategy(SearchStrategy):
        name = "mystrategy"
        spaces = ("darts",)
        config_class = MyConfig            # a dataclass of settings (``search.settings.setting``)
        presets = {"paper": {}, "cpu": {...}, "tiny": {...}}

        def search(self, ctx, config) -> SearchOutcome: ...

``run`` builds the shared ``SearchContext`` (table, template, data, budgets, device, seeds, checkpoints),
calls ``search`` and writes ``arch.json`` / ``search_log.json`` / the drawing through ``ctx.write_result``.
The module is imported by ``nasdeploy.search`` (one line there).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

# what a search is asked, what it returns and the registry of strategies live in ``search.request`` (the context
# needs them too); re-exported here, the contract's one import
from nasdeploy.progress import preflight
from nasdeploy.search.request import STRATEGIES, SearchRequest, SearchResult  # noqa: F401


def one_writer(out_dir: Path):
    """The search folder's lock (``folder_lock``), held by the process that writes it (rank 0 under torchrun)."""
    from contextlib import nullcontext

    from nasdeploy.distributed import is_main_process
    from nasdeploy.folder_lock import hold_folder

    return hold_folder(out_dir, "search folder") if is_main_process() else nullcontext()


class SearchStrategy(ABC):
    name: ClassVar[str]
    spaces: ClassVar[tuple[str, ...]] = ("darts",)  # spaces it searches; the first is its default
    default_for_spaces: ClassVar[tuple[str, ...]] = ()  # spaces whose default strategy it is
    config_class: ClassVar[type]
    presets: ClassVar[dict[str, dict[str, Any]]] = {"paper": {}, "cpu": {}, "tiny": {}}
    aliases: ClassVar[dict[str, str]] = {}  # setting names accepted for others (e.g. "lambda")
    uses_flops_budget: ClassVar[bool] = False
    # runs data-parallel under torchrun: loads training batches with ``ctx.loader`` and averages every gradient
    # with ``ctx.average_gradients`` after each backward (nasdeploy.distributed); others refuse a world size > 1
    data_parallel: ClassVar[bool] = False
    summary: ClassVar[str] = ""  # one line for ``nasdeploy strategies``

    # -------------------------------------------------------------- hooks with defaults
    def settings(self, preset: str, options: dict[str, Any] | None) -> Any:
        """The typed config: defaults < preset < options (``search.settings.make_settings``), then ``validate``."""
        from nasdeploy.search.settings import make_settings

        config = make_settings(self.name, self.config_class, self.presets, preset, options, self.aliases)
        self.validate(config)
        return config

    def validate(self, config: Any) -> None:
        """Range checks on a config; raise NasDeployError naming the setting and the fix."""

    def template_overrides(self, config: Any, table_template: dict[str, Any] | None = None,
                           space: str = "darts") -> dict[str, Any]:
        """Template fields of ``space`` the config fixes (e.g. op space, CTNAS' App. D network): the template
        ``nasdeploy run`` profiles; checked against the table's template when there is one."""
        return {}

    def wants_table(self, config: Any) -> bool:
        """True when the config needs a latency table even without a budget (e.g. a fixed latency penalty)."""
        return False

    def validation_fraction(self, config: Any) -> float:
        """Share of the training split held out as the search's validation set (default: two halves, as DARTS
        and ICDARTS §3.4.2 split it; SE-NAS holds out the paper's 5k of 50k)."""
        return 0.5

    def validation_split(self, config: Any) -> str:
        """Where the search's validation set comes from: "train" (``validation_fraction`` of the training split,
        the default) or "test" (the data's test split, the search training on the whole training split: SS
        PCP-DARTS §III-B's 50K / 10K)."""
        return "train"

    def retrain_recipe(self, space: str) -> str:
        """The ``train.recipes`` recipe its architectures are retrained with (``nasdeploy train`` / ``run``)."""
        return "icdarts"

    def cheapest_latency_ms(self, ctx, config: Any) -> float:
        """The cheapest network this strategy can output (budget pre-check); default: the space's cheapest."""
        from nasdeploy.latency.predictor import cheapest_latency_ms

        return cheapest_latency_ms(ctx.table, ctx.space.name, ctx.template)

    @abstractmethod
    def search(self, ctx, config: Any):
        """Search on the context; return a ``SearchOutcome`` (the context writes the files)."""

    # -------------------------------------------------------------- the one entry point
    def run(self, request: SearchRequest) -> SearchResult:
        from nasdeploy.search.context import build_context

        config = self.settings(request.preset, request.options)
        with one_writer(request.out_dir):
            with preflight():  # the checks' INFO lines are dropped when they refuse: the error line stands alone
                ctx = build_context(self, request, config)
            return ctx.write_result(self.search(ctx, config))


def default_strategy(space: str) -> str:
    import nasdeploy.search  # noqa: F401  (registers built-ins)

    for name in STRATEGIES:
        if space in STRATEGIES.get(name).default_for_spaces:
            return name
    return "icdarts"


def default_space(strategy: str) -> str:
    import nasdeploy.search  # noqa: F401

    return STRATEGIES.get(strategy).spaces[0]


def get_strategy(name: str) -> SearchStrategy:
    import nasdeploy.search  # noqa: F401

    return STRATEGIES.get(name)()


def searched_recipe(record) -> str:
    """The recipe of the strategy that searched ``record`` (``icdarts`` for records without a strategy)."""
    name = (record.metrics or {}).get("strategy")
    if name is None or name not in STRATEGIES:
        return "icdarts"
    return get_strategy(name).retrain_recipe(record.space)
