"""The operator console: server-rendered pages on the admin listener (see docs/console.md).

When a Pix does not arrive the operator asks: did the sender reach us, were they refused and why,
is the event stored, did the application get it, and can I send it again? Each page answers one
of those from the inbox and the configuration; only the replay form writes anything.
"""

from __future__ import annotations

from .app import ConsoleHost, add_console

__all__ = ["ConsoleHost", "add_console"]
