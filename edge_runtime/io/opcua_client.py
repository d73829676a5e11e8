"""OPC UA client driver for field devices (a battery system controller, a chiller PLC).

OpcUaDevice implements the FieldDevice port like ModbusDevice, over a session an
OpcUaEndpoint (io/opcua_endpoint.py) shares between the devices of one server. On each
(re)connect it resolves the io_map refs (namespace URIs, browse paths), reads every node's
DataType (an unknown node is reported naming its point) and subscribes to its inputs with a
publishing interval of poll_ms; a server without subscriptions is polled with Read instead.
Samples carry the source timestamp and a quality from the StatusCode (Bad -> BAD, Uncertain ->
UNCERTAIN, its name as the reason); comms loss marks every input BAD with the reason. Outputs
follow the same blocks.OutputSchedule as Modbus (write on change, refresh_ms, max_hold_s expiry
to the safe image, everything rewritten on a new session), one Write request per due set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from asyncua import ua
from asyncua.common.subscription import DataChangeNotif, Subscription
from asyncua.ua.attribute_ids import AttributeIds

from edge_runtime.config.codec import CodecError
from edge_runtime.config.schema import DeviceConfig
from edge_runtime.core.clock import Clock
from edge_runtime.core.points import Sample
from edge_runtime.core.ports import InputTable
from edge_runtime.io.blocks import OutputSchedule
from edge_runtime.io.modbus import DISCONNECTED, FieldError
from edge_runtime.io.opcua_codec import (
    by_nodeid,
    device_refs,
    server_type,
    status_text,
    to_sample,
    to_variant,
)
from edge_runtime.io.opcua_endpoint import OpcUaEndpoint, resolve
from edge_runtime.io.output_loop import OutputWriter, raise_if_cancel_was_swallowed

log = logging.getLogger(__name__)


class _Notifications:
    """asyncua subscription handler: every data change of one binding goes to the device."""

    def __init__(self, device: OpcUaDevice, binding: int) -> None:
        self.device, self.binding = device, binding

    def datachange_notification(self, node: Any, val: Any, data: DataChangeNotif) -> None:
        """A monitored item changed: publish its sample."""
        self.device.on_change(self.binding, node.nodeid, data.monitored_item.Value)

    def status_change_notification(self, status: ua.StatusChangeNotification) -> None:
        """The subscription ended (server shut down, session lost)."""
        self.device.on_lost(self.binding, status_text(status.Status))


class OpcUaDevice(OutputWriter):
    """FieldDevice over OPC UA: subscribes to (or polls) inputs, writes staged outputs."""

    def __init__(self, config: DeviceConfig, endpoint: OpcUaEndpoint, table: InputTable,
                 clock: Clock, *, subscribe: bool = True) -> None:
        self._config, self.endpoint, self.table, self.clock = config, endpoint, table, clock
        self.refs = device_refs(config)  # ValueError naming the point: a config error
        self.specs = {p.name: p for p in config.io_map.points}
        self.inputs = [p.name for p in config.io_map.inputs]
        self._keys = {name: f"{config.name}.{name}" for name in self.specs}
        self.want_subscription = subscribe
        self.outputs = OutputSchedule(config.name, config.io_map.outputs, config.refresh_s)
        self.nodeids: dict[str, ua.NodeId] = {}
        self.vtypes: dict[str, ua.VariantType | None] = {}
        self.point_errors: dict[str, str] = {}  # points the server cannot serve, and why
        self._by_node: dict[ua.NodeId, list[str]] = {}
        self._bound_gen = -1  # endpoint generation the refs were resolved on
        self._written_gen = -1
        self.binding = 0  # +1 per bind: notifications of an older one are ignored
        self.subscription: Subscription | None = None
        self.mode = "unbound"  # subscription | polling | unbound
        self._write_reason = ""
        self._wake = asyncio.Event()
        self.polls = self.reads = self.writes = self.notifications = 0
        self.errors: Counter[str] = Counter()
        self.last_error = ""
        self.safe_source: Callable[[], Mapping[str, float]] | None = None  # see ModbusDevice
        self._safe_seen: Mapping[str, float] | None = None

    @property
    def config(self) -> DeviceConfig:
        """The device's configuration."""
        return self._config

    async def run(self) -> None:
        """Bind, watch the session and poll where needed until cancelled; never raises."""
        writer = asyncio.create_task(self._write_loop(), name=f"{self._config.name}-writer")
        period = self._config.poll_s
        deadline = self.clock.monotonic()
        try:
            while True:
                raise_if_cancel_was_swallowed()
                try:
                    await self.poll_once()
                except Exception as exc:  # a driver bug must not end the device
                    self._error("internal", repr(exc))
                    log.exception("%s: poll failed", self._config.name)
                deadline += period
                now = self.clock.monotonic()
                if now >= deadline:  # overran: keep the phase
                    deadline += (math.floor((now - deadline) / period) + 1) * period
                await asyncio.sleep(deadline - now)
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            self._unbind()

    # -- inputs -----------------------------------------------------------------------------
    async def poll_once(self) -> None:
        """Connect and bind if needed; read the inputs when not subscribed."""
        ep = self.endpoint
        if not await ep.ensure_connected():
            reason = "disconnected" if ep.ever_connected else "not connected"
            self._lost(f"{reason}: {ep.last_error}", reason.replace(" ", "_"))
            return
        if self._bound_gen != ep.generation:
            try:
                await self._bind()
            except FieldError as err:
                self._lost(f"bind failed: {err.reason}", err.kind)
                return
            self._wake.set()  # (re)connected: rewrite every output
        if self.mode == "polling":
            await self._read_inputs()
        self.polls += 1

    def _lost(self, reason: str, kind: str) -> None:
        self._error(kind, reason)
        self._unbind()
        self._mark_bad(self.inputs, reason)

    async def _bind(self) -> None:
        """Resolve refs, learn the servers' types, subscribe (or fall back to polling)."""
        ep, cfg = self.endpoint, self._config
        self._unbind()
        self.binding += 1
        nodeids, problems = await resolve(ep, self.refs)
        names = list(nodeids)
        types = await ep.request(lambda c: c.uaclient.read_attributes(
            [nodeids[n] for n in names], AttributeIds.DataType)) if names else []
        for name, dv in zip(names, types, strict=True):
            if dv.StatusCode is not None and dv.StatusCode.is_bad():
                problems[name] = f"{self.specs[name].ref}: {status_text(dv.StatusCode)}"
                del nodeids[name]
            else:
                self.vtypes[name] = server_type(dv)
        for name, why in problems.items():
            if self.point_errors.get(name) != why:
                log.error("%s: point %s (ref %r): %s", cfg.name, name, self.specs[name].ref, why)
            self._error("bad_ref", f"point {name}: {why}")
        self.point_errors = problems
        self.nodeids, self._by_node = nodeids, by_nodeid(nodeids)
        self._mark_bad([n for n in self.inputs if n in problems], "",
                       reasons={n: f"point {n}: {problems[n]}" for n in problems})
        self._bound_gen = ep.generation
        watched = [n for n in self.inputs if n in nodeids]
        self.mode = "polling"
        if self.want_subscription and watched:
            binding = self.binding
            try:
                sub = await ep.request(lambda c: c.create_subscription(
                    cfg.poll_s * 1000, _Notifications(self, binding)))
                self.subscription = sub
                results = await ep.request(lambda c: sub.subscribe_data_change(
                    [c.get_node(nodeids[n]) for n in watched],
                    sampling_interval=ua.Double(cfg.poll_s * 1000)))
            except FieldError as err:
                if err.kind == DISCONNECTED:
                    raise
                log.info("%s: no subscription (%s): polling every %g ms", cfg.name,
                         err.reason, cfg.poll_s * 1000)
                self._drop_subscription()  # one created without its items: not left behind
                return
            self.mode = "subscription"
            for name, res in zip(watched, results, strict=True):
                if isinstance(res, ua.StatusCode):  # the server refused this item
                    why = f"{self.specs[name].ref}: monitored item {status_text(res)}"
                    self.point_errors[name] = why
                    log.error("%s: point %s: %s", cfg.name, name, why)
                    self._mark_bad([name], f"point {name}: {why}")

    def _unbind(self) -> None:
        self.binding += 1  # late notifications of the old subscription are ignored
        self._bound_gen = -1
        self.mode = "unbound"
        self._drop_subscription()

    def _drop_subscription(self) -> None:
        sub, self.subscription = self.subscription, None
        if sub is not None and self.endpoint.connected:
            task = asyncio.ensure_future(_delete_quietly(sub, self.endpoint.timeout_s))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

    def on_change(self, binding: int, nodeid: ua.NodeId, dv: ua.DataValue) -> None:
        """A subscription's data change (ignored when it belongs to an older binding)."""
        if binding != self.binding:
            return
        self.notifications += 1
        self._publish(self._by_node.get(nodeid, ()), dv)

    def on_lost(self, binding: int, why: str) -> None:
        """The server ended the subscription: inputs BAD until the next bind."""
        if binding != self.binding:
            return
        # asyncua ends every subscription with BadShutdown when it loses the connection,
        # whatever the cause: say what it means for the operator.
        what = "connection lost or server stopped" if why == "BadShutdown" else "ended by server"
        self._lost(f"disconnected: subscription {what} ({why})", "subscription")

    async def _read_inputs(self) -> None:
        names = [n for n in self.inputs if n in self.nodeids]
        if not names:
            return
        params = ua.ReadParameters(TimestampsToReturn=ua.TimestampsToReturn.Both, NodesToRead=[
            ua.ReadValueId(NodeId=self.nodeids[n], AttributeId=AttributeIds.Value)
            for n in names])
        self.reads += 1
        try:
            values = await self.endpoint.request(lambda c: c.uaclient.read(params))
        except FieldError as err:
            self._error(err.kind, f"read: {err.reason}")
            self._mark_bad(names, err.reason)
            if err.kind == DISCONNECTED:
                self._unbind()
            return
        for name, dv in zip(names, values, strict=True):
            self._publish((name,), dv)

    def _publish(self, names: Any, dv: ua.DataValue) -> None:
        now = self.clock.wall()
        for name in names:
            key = self._keys[name]
            self.table[key] = to_sample(dv, self.specs[name], now, self.table.get(key))

    def _mark_bad(self, names: Any, reason: str, reasons: Mapping[str, str] | None = None) -> None:
        ts = self.clock.wall()
        for name in names:
            key = self._keys[name]
            prev = self.table.get(key)  # the last value stays for display; BAD is never used
            self.table[key] = Sample.bad((reasons or {}).get(name, reason), ts,
                                         prev.value if prev is not None else None)

    # -- outputs (stage and the writer loop: io/output_loop.py) -----------------------------
    async def write_due(self) -> None:
        """Write outputs that changed, are due a refresh, or must go to the safe image."""
        cfg, ep, outputs = self._config, self.endpoint, self.outputs
        now = self.clock.monotonic()
        self._use_safe_image()
        held = len(outputs.held)
        items = outputs.due(now)
        if len(outputs.held) > held:
            self._error("max_hold", f"outputs at failsafe: {', '.join(sorted(outputs.held))}")
        bound = ep.connected and self._bound_gen == ep.generation
        if bound and self._written_gen != ep.generation:
            outputs.written.clear()  # new session (maybe a restarted PLC): write everything
            self._written_gen = ep.generation
            items = outputs.due(now)
        if not items or not bound:
            outputs.finished(now, not items, cfg.poll_s)
            return
        names, values, ok = [], [], True
        for item in items:
            if item.name not in self.nodeids:
                ok = False  # its ref did not resolve: already reported by the bind
                continue
            try:
                variant = to_variant(self.specs[item.name], item.words, self.vtypes.get(item.name))
            except CodecError as exc:
                ok = False
                self._write_failed(item.name, "refused", str(exc))
                continue
            names.append(item.name)
            values.append(ua.DataValue(variant))
        if names:
            nodeids = [self.nodeids[n] for n in names]
            try:
                codes = await ep.request(lambda c: c.uaclient.write_attributes(
                    nodeids, values, AttributeIds.Value))
            except FieldError as err:
                self._write_failed(",".join(names), err.kind, err.reason)
                outputs.finished(now, False, cfg.poll_s)
                return
            for name, code in zip(names, codes, strict=True):
                if code.is_good():
                    outputs.acknowledged([name])
                else:
                    ok = False
                    self._write_failed(name, "write_refused", status_text(code))
            self.writes += 1
        if ok:
            self._write_reason = ""
        outputs.finished(now, ok, cfg.poll_s)

    def _write_failed(self, names: str, kind: str, reason: str) -> None:
        where = f"write {names}"
        self._error(kind, f"{where}: {reason}")
        if f"{where}: {reason}" != self._write_reason:  # log transitions, not every retry
            log.warning("%s: %s: %s", self._config.name, where, reason)
            self._write_reason = f"{where}: {reason}"

    def get_status(self) -> dict[str, Any]:
        """Connection, subscription, request and error figures for every status reader."""
        cfg = self._config
        return {
            "connected": self.endpoint.connected, "endpoint": cfg.endpoint, "mode": self.mode,
            "polls": self.polls, "reads": self.reads, "notifications": self.notifications,
            "writes": self.writes,
            "refused_writes": self.outputs.refused,
            "outputs_at_failsafe": sorted(self.outputs.held),
            "point_errors": dict(self.point_errors), "errors": dict(self.errors),
            "last_error": self.last_error, "connection": self.endpoint.get_status(),
        }


async def _delete_quietly(sub: Subscription, timeout_s: float) -> None:
    with contextlib.suppress(Exception):
        async with asyncio.timeout(timeout_s):
            await sub.delete()
