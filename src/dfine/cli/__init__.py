"""The ``dfine`` command line: one module per subcommand, each a thin wrapper around the library."""
