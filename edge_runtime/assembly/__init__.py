"""Assembly: NodeConfig and its loader, each role's blocks, and `assemble`, which builds a node.

    from edge_runtime.assembly import assemble, load_node_config
    node = assemble(load_node_config("examples/cdu.toml"))
    await node.run()
"""

from edge_runtime.assembly.build import assemble
from edge_runtime.assembly.config import ROLES, NodeConfig
from edge_runtime.assembly.loader import load_node_config

__all__ = ["ROLES", "NodeConfig", "assemble", "load_node_config"]
