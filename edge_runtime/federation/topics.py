"""The MQTT topic contract (ARCHITECTURE.md section 5): every topic string is built here.

    pswd/v1/{site}/{node}/state                      birth/death, retained, the death is the will
    pswd/v1/{site}/{node}/telemetry                  CBOR batches
    pswd/v1/{site}/{node}/cmd/{kind}                 signed command envelopes
    pswd/v1/{site}/{node}/alarm                      alarm and event records
    pswd/v1/{site}/{node}/error                      answers to invalid messages
    pswd/v1/{site}/workload/announce                 Annex A.1
    pswd/v1/{site}/workload/response/{workload_id}   Annex A.2
    pswd/v1/{site}/workload/reply/{client_id}        A.2 on a client's MQTT 5 response topic
    pswd/v1/{site}/grid/status, .../grid/forecast    retained
    pswd/v1/{site}/time/request                      clock round trips to the site (shared sub)
    pswd/v1/{site}/{node}/time                       clock replies without a response topic
    pswd/v1/{site}/coordinator/{instance}/state      coordinator liveness (Sparkplug host
                                                     application state): retained, the offline
                                                     state is the will; nodes treat "none
                                                     online" as link loss (link_loss.py)
    pswd/v1/{site}/coordinator/{instance}/decision   an admission, signed, for the other
                                                     coordinator instances to book

Everything under pswd/v1/{site}/coordinator/ is written by coordinators only: the broker's
ACL grants write there to the coordinators' identities alone (README, MQTT section).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ROOT = "pswd/v1"
COMMAND_KINDS = ("thermal_control", "battery_control", "grid_signal", "rebirth", "workload")
# Site, node and workload ids become topic levels: no wildcards, separators or control chars.
_LEVEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
# Node names that would collide with the site-level topic families.
RESERVED_NODES = frozenset({"workload", "grid", "time", "coordinator"})


def check_level(kind: str, value: str) -> str:
    """Return `value` if it can be one topic level, else raise ValueError naming `kind`."""
    if not _LEVEL.match(value):
        raise ValueError(f"{kind} {value!r} cannot be an MQTT topic level "
                         "(letters, digits, _ . : - only; at most 128 characters)")
    return value


@dataclass(frozen=True, slots=True)
class SiteTopics:
    """Topics of one site."""

    site: str

    def __post_init__(self) -> None:
        check_level("site", self.site)

    @property
    def base(self) -> str:
        return f"{ROOT}/{self.site}"

    @property
    def announce(self) -> str:
        return f"{self.base}/workload/announce"

    def shared_announce(self, group: str = "site") -> str:
        """The announce topic on an MQTT 5 shared subscription (several coordinators)."""
        return f"$share/{check_level('group', group)}/{self.announce}"

    def response(self, workload_id: str) -> str:
        return f"{self.base}/workload/response/{check_level('workload_id', workload_id)}"

    def reply(self, client_id: str) -> str:
        """A workload client's private MQTT 5 response topic."""
        return f"{self.base}/workload/reply/{check_level('client_id', client_id)}"

    @property
    def prepare(self) -> str:
        """Admitted announcements, once for every rack and CDU node (they all subscribe)."""
        return f"{self.base}/workload/prepare"

    @property
    def reply_prefix(self) -> str:
        return f"{self.base}/workload/reply/"

    @property
    def time_request(self) -> str:
        return f"{self.base}/time/request"

    @property
    def grid_status(self) -> str:
        return f"{self.base}/grid/status"

    @property
    def grid_forecast(self) -> str:
        return f"{self.base}/grid/forecast"

    def coordinator_state(self, instance: str) -> str:
        """A coordinator instance's retained online / offline state (its will: offline)."""
        return f"{self.base}/coordinator/{check_level('instance', instance)}/state"

    @property
    def all_coordinator_states(self) -> str:
        return f"{self.base}/coordinator/+/state"

    def coordinator_decision(self, instance: str) -> str:
        """Admissions of one coordinator instance, for the others to book."""
        return f"{self.base}/coordinator/{check_level('instance', instance)}/decision"

    @property
    def all_coordinator_decisions(self) -> str:
        return f"{self.base}/coordinator/+/decision"

    @property
    def coordinator_prefix(self) -> str:
        return f"{self.base}/coordinator/"

    @property
    def all_states(self) -> str:
        return f"{self.base}/+/state"

    @property
    def all_telemetry(self) -> str:
        return f"{self.base}/+/telemetry"

    def node(self, name: str) -> NodeTopics:
        return NodeTopics(self.site, name)


@dataclass(frozen=True, slots=True)
class NodeTopics:
    """Topics of one node."""

    site: str
    node: str

    def __post_init__(self) -> None:
        check_level("site", self.site)
        check_level("node", self.node)
        if self.node in RESERVED_NODES:
            raise ValueError(f"node {self.node!r} is reserved for site-level topics")

    @property
    def base(self) -> str:
        return f"{ROOT}/{self.site}/{self.node}"

    @property
    def state(self) -> str:
        return f"{self.base}/state"

    @property
    def telemetry(self) -> str:
        return f"{self.base}/telemetry"

    @property
    def alarm(self) -> str:
        return f"{self.base}/alarm"

    @property
    def error(self) -> str:
        return f"{self.base}/error"

    def cmd(self, kind: str) -> str:
        if kind not in COMMAND_KINDS:
            raise ValueError(f"command kind {kind!r} unknown; one of {', '.join(COMMAND_KINDS)}")
        return f"{self.base}/cmd/{kind}"

    @property
    def time(self) -> str:
        return f"{self.base}/time"

    @property
    def all_cmds(self) -> str:
        return f"{self.base}/cmd/+"


def parse(topic: str) -> tuple[str, str, str]:
    """Split a PSWD topic into (site, node-or-family, rest); ValueError if it is not one."""
    parts = topic.split("/", 4)
    if len(parts) < 4 or f"{parts[0]}/{parts[1]}" != ROOT:
        raise ValueError(f"topic {topic!r} is not under {ROOT}/")
    return parts[2], parts[3], parts[4] if len(parts) > 4 else ""
