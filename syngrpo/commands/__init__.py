"""One module per ``syngrpo`` subcommand: ``add_parser(subparsers)`` and ``run(args)``."""
