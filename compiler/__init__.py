"""The bottom of the stack: the `graph` dialect and its IR helpers (dialects/, ir.py, interpret.py, errors, knobs,
targets) and the front end that fills it (capture.py, importer.py and its ATen tables).

Users import `solder` (`solder.compile`, `solder.load`, `solder.SparseAttention`); the API, the runtime and the CLI
live in the `solder` folder above this package's layers.
"""
