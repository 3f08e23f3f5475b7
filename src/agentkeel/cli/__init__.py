"""The ``keel`` command line (Typer + Rich); ``main`` is the script's entry point."""
