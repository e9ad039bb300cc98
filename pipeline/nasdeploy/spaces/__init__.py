"""Search spaces: the op registry, DARTS cells, MobileNet-like layers, encodings, builders, FLOPs."""

from nasdeploy.spaces.base import SPACES, OpInstance, SearchSpace, get_space
from nasdeploy.spaces import darts, darts_macro, mobilenet  # noqa: F401  (register the built-in spaces)

__all__ = ["SPACES", "OpInstance", "SearchSpace", "get_space"]
