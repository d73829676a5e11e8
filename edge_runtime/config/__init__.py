"""Device-level configuration: TOML files and io_maps mapped once, at load, to frozen objects."""

from edge_runtime.config.reader import ConfigError
from edge_runtime.config.schema import (
    Access,
    DeviceConfig,
    IoMap,
    Limits,
    PointSpec,
    Table,
)

__all__ = [
    "Access",
    "ConfigError",
    "DeviceConfig",
    "IoMap",
    "Limits",
    "PointSpec",
    "Table",
]
