"""IR dialects: `graph` (tensor-level ops) and the helpers for their types."""

from compiler.dialects.graph import Graph

__all__ = ["Graph"]
