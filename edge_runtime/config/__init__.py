"""Configuration: TOML files mapped once, at load, to frozen typed objects."""

from edge_runtime.config.reader import ConfigError
from edge_runtime.config.schema import (
    Access,
    DeviceConfig,
    IoMap,
    Limits,
    NodeConfig,
    PointSpec,
    Table,
)

__all__ = [
    "Access",
    "ConfigError",
    "DeviceConfig",
    "IoMap",
    "Limits",
    "NodeConfig",
    "PointSpec",
    "Table",
]
