"""A quiet terminal by default: matpipe's own messages, warnings from everyone, and no third-party INFO.

Without `-v` the lines a user would otherwise wade through are held back: Ray's start-up INFO and its
token-authentication notice, Ray Data's per-operator progress (several lines a second; they still go to
the Ray session's log files), and the httpx "HTTP Request: …" lines Prefect's client makes. With `-v`
everything is shown, at DEBUG for matpipe. Call `configure_console` before Ray is imported: Ray reads its
log level (`RAY_LOGGER_LEVEL`) at import.
"""
from __future__ import annotations

import logging
import os
import sys

LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"

# Logger → the level it gets on a quiet terminal.
QUIET_LEVELS = {
    "httpx": logging.WARNING,
    "httpcore": logging.WARNING,
    # "Token authentication is enabled for this Ray cluster…" on every local start: a notice, not a problem.
    "ray._private.authentication": logging.ERROR,
}


def configure_console(verbose: bool = False) -> None:
    """Root logging at INFO (DEBUG with `verbose`) and third-party chatter held back unless `verbose`."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format=LOG_FORMAT)
    if verbose:
        return
    quiet_third_party()


def quiet_third_party() -> None:
    """Hold back third-party INFO (idempotent; an explicit RAY_LOGGER_LEVEL is respected)."""
    if "ray" not in sys.modules:
        os.environ.setdefault("RAY_LOGGER_LEVEL", "warning")
    for name, level in QUIET_LEVELS.items():
        logger = logging.getLogger(name)
        if logger.level < level:
            logger.setLevel(level)


def quiet_ray_data_console() -> None:
    """Keep Ray Data's per-operator progress lines off the terminal (they stay in its log file).

    Ray Data installs its own handlers when `ray.data` is imported; this lowers only the terminal ones.
    """
    import ray.data  # noqa: F401 - importing it installs Ray Data's handlers, which we then adjust

    for handler in logging.getLogger("ray.data").handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.setLevel(max(handler.level, logging.WARNING))
