"""`vibeserve ui`: a read-only web dashboard over run stores that updates itself while a run goes on."""

from vibeserve.ui.app import create_app, serve
from vibeserve.ui.data import RunSource, open_readonly

__all__ = ["RunSource", "create_app", "open_readonly", "serve"]
