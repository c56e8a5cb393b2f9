"""IR dialects: `graph` (tensor-level ops) and the helpers for their types."""

from solder.compiler.dialects.graph import Graph

__all__ = ["Graph"]
