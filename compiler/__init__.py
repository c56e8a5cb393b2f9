"""The compiler's own layers: the IR (`dialects`, `ir`), capture and import, the runtime, the API and the CLI.

Users import `solder` (`solder.compile`, `solder.load`, `solder.SparseAttention`); this package holds what
those names are made of.
"""
