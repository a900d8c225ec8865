"""Example job programs shipped with spoolq (used by ``spoolq demo``)."""
