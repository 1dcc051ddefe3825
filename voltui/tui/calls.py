"""Engine calls from the dashboard: a mistake or a lost link is a notification, never a crash.

The message may come from an attached server we do not control, so it passes the sanitiser
here, whatever app shows it (the dashboard's own `notify` cleans again; cleaning is idempotent).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import TypeVar

from textual.app import App

from voltui.engine.errors import UserError
from voltui.safetext import clean, clean_multiline

log = logging.getLogger(__name__)
T = TypeVar("T")


async def engine_call(app: App[object], call: Awaitable[T]) -> T | None:
    """Await `call`; a UserError shows its own one-paragraph message, anything else (a bug, a
    transport failure) a short one, and either way the screen carries on with None."""
    try:
        return await call
    except UserError as exc:
        # One paragraph, possibly listing problems on lines of their own: keep the lines.
        app.notify(clean_multiline(exc, max_len=300), severity="error", timeout=8, markup=False)
    except Exception as exc:
        log.exception("engine call failed")
        app.notify(
            f"engine error: {clean(exc, max_len=300)}", severity="error", timeout=8, markup=False
        )
    return None
