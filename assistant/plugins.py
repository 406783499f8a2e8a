"""Command groups that other packages add to the ``assistant`` console script.

A package names a function ``register(main: click.Group)`` in its ``pyproject.toml``::

    [project.entry-points."assistant.commands"]
    training = "alignment.cli_train:register"

That is how ``train``, ``models``, ``eval`` and ``data`` join ``assistant`` while the library
never imports :mod:`alignment` (alignment builds on assistant, not the reverse). Entry points
are read from the installed package's metadata: after changing them, install the package
again (``pip install -e .``; ``make setup`` does it when ``pyproject.toml`` changes).
"""

from __future__ import annotations

import logging
from importlib.metadata import entry_points

import click

log = logging.getLogger(__name__)

#: The entry-point group read by :func:`register_commands`.
COMMANDS_GROUP = "assistant.commands"


def register_commands(main: click.Group) -> list[str]:
    """Let every installed ``assistant.commands`` entry point add its commands to ``main``;
    returns the entry points' names. A plugin that fails to import is a bug and raises."""
    names = []
    for ep in sorted(entry_points(group=COMMANDS_GROUP), key=lambda e: e.name):
        ep.load()(main)
        names.append(ep.name)
        log.debug("Commands registered by %s (%s)", ep.name, ep.value)
    return names
