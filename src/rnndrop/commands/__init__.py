"""The ``rnndrop`` sub-commands: each module adds its parser(s) with ``add_parsers(subparsers)``
and holds the command functions; :mod:`rnndrop.cli` only wires them together."""
