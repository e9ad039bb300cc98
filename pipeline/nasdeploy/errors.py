"""Errors a user can cause. The CLI prints them as one line and exits with code 2."""


class NasDeployError(Exception):
    """A problem in the user's input or environment, with the fix in the message.

    The message must be one line naming what is wrong and how to fix it, e.g.
    ``"no CUDA device 'cuda:0' on this machine; use --device cpu or run on a GPU host"``.
    """
