"""Named log channels: `SOLDER_LOG=fusion,costmodel` turns those channels on at INFO level."""

from __future__ import annotations

import logging

from solder.compiler import knobs

CHANNELS = ("capture", "import", "passes", "fusion", "costmodel", "backend", "runtime", "attention")


def get(channel: str) -> logging.Logger:
    """The logger of one channel; warnings always show, INFO only when the channel is enabled."""
    assert channel in CHANNELS, f"unknown log channel {channel!r}; known: {', '.join(CHANNELS)}"
    logger = logging.getLogger(f"solder.{channel}")
    enabled = knobs.log_channels()
    if channel in enabled or "all" in enabled:
        logger.setLevel(logging.INFO)
        if not logging.getLogger("solder").handlers:
            h = logging.StreamHandler()
            h.setFormatter(logging.Formatter("[solder.%(name)s] %(message)s".replace("%(name)s", channel)))
            logger.addHandler(h)
    return logger
