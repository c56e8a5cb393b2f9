"""IR passes over the `graph` dialect, one per file, registered in `solder.passes.registry`."""
