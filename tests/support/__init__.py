"""What the tests share besides fixtures (those are in ``conftest.py``): one job per module.

``pki`` the certificates, ``configs`` config files, ``client`` requests to a receiver, ``load`` many
at once, ``processes`` the command line and ``serve`` as subprocesses, ``procfs`` what /proc shows of
them, ``polling`` bounded waits, ``app`` the merchant's application, ``swappable`` certificate files
swapped under a running server, ``records`` store rows, ``efi_standin`` Efí's API.
"""

from .app import OLD_SECRET, SECRET, App, forward_table
from .client import REFUSED, Answer, client_context, http_get, https_post, pix
from .configs import config_text, shared_config
from .load import post_pix, send_all, statuses
from .pki import Pki, make_pki
from .polling import WAIT, stays, until, wait_until
from .processes import PYTHON, Serve, ServerProcess, run_cli
from .procfs import CLOSE_WAIT, ESTABLISHED, alive, connections, listening_ports, unread
from .records import audit
from .swappable import Swappable, blocking_connect, served_subject, write_atomically

__all__ = [
    "CLOSE_WAIT",
    "ESTABLISHED",
    "OLD_SECRET",
    "PYTHON",
    "REFUSED",
    "SECRET",
    "WAIT",
    "Answer",
    "App",
    "Pki",
    "Serve",
    "ServerProcess",
    "Swappable",
    "alive",
    "audit",
    "blocking_connect",
    "client_context",
    "config_text",
    "connections",
    "forward_table",
    "http_get",
    "https_post",
    "listening_ports",
    "make_pki",
    "pix",
    "post_pix",
    "run_cli",
    "send_all",
    "served_subject",
    "shared_config",
    "statuses",
    "stays",
    "unread",
    "until",
    "wait_until",
    "write_atomically",
]
