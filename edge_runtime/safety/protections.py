"""Protections a role's control config implies, as safety-layer rules.

A protection that lives in a control block loses to anything applied after control: a
technician's force, an operator's hold. Rules run in the safety layer, whose last word no
force or hold beats. So where a control section names a hard limit (two-phase loop pressure
high-high -> condenser full open), the assembler turns it into a rule here; the control block
keeps only regulation (it tracks the protected value, so control resumes without a bump).

Control fallbacks on a BAD sensor (two-phase condenser to `on_bad_output_pct`, heat-recovery
pump to 100 %) stay in their blocks: they are how the loop regulates without a measurement,
and the node's [safety.inputs] `on_bad = "trip"` is the protection for a lost sensor.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from edge_runtime.core.events import Severity
from edge_runtime.safety.interlocks import Action, Rule
from edge_runtime.safety.limits import Compare

if TYPE_CHECKING:  # read by attribute only: safety does not import control at run time
    from edge_runtime.control.two_phase import TwoPhaseConfig


def two_phase_protections(cfg: TwoPhaseConfig) -> list[Rule]:
    """High-high loop pressure: the condenser output to its maximum while it lasts."""
    p = cfg.points
    return [Rule(
        f"{cfg.name}.pressure_high_high",
        Compare(p.pressure, ">", cfg.pressure_high_high_bar),
        Action.OVERRIDE,
        MappingProxyType({p.output: cfg.output_max_pct}),
        severity=Severity.CRITICAL,
        message=f"two-phase loop pressure above high-high {cfg.pressure_high_high_bar:g} bar: "
                f"{p.output} to {cfg.output_max_pct:g} %",
    )]


def role_protections(config: Any) -> list[Rule]:
    """Every protection the node config's control sections imply (safety-layer rules)."""
    rules: list[Rule] = []
    two_phase = getattr(config, "two_phase", None)
    if two_phase is not None:
        rules += two_phase_protections(two_phase)
    return rules
