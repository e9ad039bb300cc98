"""Errors a user can cause. The CLI prints them as one line and exits with code 2."""


class NasDeployError(Exception):
    """A problem in the user's input or environment, with the fix in the message.

    The message must be one line naming what is wrong and how to fix it, e.g.
    ``"no CUDA device 'cuda:0' on this machine; use --device cpu or run on a GPU host"``.
    """


def what_is_wrong(exc: Exception) -> str:
    """A malformed record's problem in words, for a one-line error: ``field 'space' is missing``, not ``KeyError('space')``."""
    if isinstance(exc, KeyError) and exc.args:
        return f"field {exc.args[0]!r} is missing"
    return f"{type(exc).__name__}: {exc}"
