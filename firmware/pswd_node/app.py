"""The sensor node's scan: inputs, local failsafes, outputs, watchdog, then the network.

One scan (App.step), in this order, so nothing on the network can delay the failsafes:
  1. read the temperatures (scaled, range-checked: outside the physical range BAD and not
     used), the leak and the cable-fault inputs;
  2. decide the valve: a leak forces 0 and latches; else the host's command while it is
     held (max_hold_ms since the last accepted one), else the failsafe value;
  3. write the valve, feed the watchdog;
  4. add this scan's frame to the telemetry batch;
  5. network: the uplink connects or takes waiting commands (checked at once, applied at
     the next scan's step 2), then the batch goes out when due or when leak, cable fault or
     valve changed, then queued alarms and errors.
App.run paces scans on ticks_ms to a fixed period and counts overruns (a scan that ends past
its deadline; the schedule then restarts from now rather than bursting to catch up).
The contract on the wire is firmware/README.md's "Federation contract".
"""

import json

from . import PSWD_VERSION, VERSION, compat, jsonc
from .envelope import Verifier
from .telemetry import (
    BAD,
    BOOL,
    FLOAT,
    GOOD,
    INT,
    TYPE_NAMES,
    UNCERTAIN,
    BatchBuilder,
    encode_birth,
)

POINTS = (("inlet_temp_c", "degC", FLOAT), ("outlet_temp_c", "degC", FLOAT),
          ("leak", "", BOOL), ("leak_cable_fault", "", BOOL), ("valve", "", BOOL),
          ("overruns", "", INT))
TEMPS = ("inlet_temp_c", "outlet_temp_c")
CMD_FIELDS = ("PSWD_version", "timestamp", "action", "point", "value", "command_id",
              "nonce", "role", "signature")
MAX_CMD_BYTES = 512
ERRORS_PER_S = 5
MAX_QUEUE = 8


class Sessions:
    """The session number, kept in a file so a reset never reuses one."""

    def __init__(self, state_dir=""):
        self.path = (state_dir.rstrip("/") + "/" if state_dir else "") + "session"
        try:
            with open(self.path) as f:
                self.current = int(f.read().strip() or 0)
        except (OSError, ValueError):
            self.current = 0

    @property
    def upcoming(self):
        return self.current + 1

    def next(self):
        self.current += 1
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % self.current)
        import os
        os.rename(tmp, self.path)
        return self.current


class App:
    """The application: App(cfg, hw, uplink, key).run() on a board; step() is one scan."""

    def __init__(self, cfg, hw, uplink=None, key=None, sessions=None):
        self.cfg = cfg
        self.hw = hw
        self.uplink = uplink
        self.site = cfg["site"]
        self.node = cfg["sensor_id"]
        base = "pswd/v1/%s/%s/" % (self.site, self.node)
        self.t_state = (base + "state").encode()
        self.t_telemetry = (base + "telemetry").encode()
        self.t_alarm = (base + "alarm").encode()
        self.t_error = (base + "error").encode()
        self.cmd_prefix = base + "cmd/"
        self.period_ms = cfg["period_ms"]
        self.telemetry_ms = cfg["telemetry_period_ms"]
        ins = cfg["inputs"]
        self.scales = [(ins[n]["gain"], ins[n]["offset"], ins[n]["min_c"], ins[n]["max_c"],
                        ins[n]["rail_low"], ins[n]["rail_high"]) for n in TEMPS]
        v = cfg["outputs"]["valve"]
        self.failsafe = v["failsafe"]
        self.max_hold_ms = v["max_hold_ms"]
        self.sessions = sessions if sessions is not None else Sessions(cfg["state_dir"])
        self.session = self.sessions.current
        self.seq = 0
        self.points = [(i, p[0], p[1], p[2]) for i, p in enumerate(POINTS)]
        self.verifier = Verifier(key, self.node, "output", cfg["cmd_role"],
                                 max_age_ms=cfg["max_age_s"] * 1000,
                                 max_nonces=cfg["max_nonces"], not_before_ms=hw.wall_ms())
        # process state
        self.temps = [None, None]
        self.temp_q = [BAD, BAD]
        self.leak = 0
        self.fault = 0
        self.latched = False
        self.valve = self.failsafe
        self.held = False
        self.cmd_value = self.failsafe
        self.cmd_ticks = 0
        self.pending = None  # an accepted command's value, applied at the next scan
        # counters
        self.scans = 0
        self.overruns = 0
        self.accepted = 0
        self.invalid_total = 0
        self.unanswered = 0
        self.dropped_batches = 0
        self.dropped_messages = 0
        self.body_us = 0
        self.body_max_us = 0
        # telemetry and outgoing messages
        self.batch = BatchBuilder()
        self.batch_ticks = 0
        self.flush_now = False
        self.rebirth = False
        self.outq = []  # (topic, payload)
        self.err_window = 0
        self.err_used = 0
        self.stopping = False
        if uplink is not None:
            uplink.on_message = self.on_message
            uplink.on_connect = self.birth
            uplink.will = self.will
        if key is None:
            self.alarm("board", "alarm", "no_key",
                       "no command key provisioned: every command is refused")
        try:
            cause = hw.reset_cause()
        except AttributeError:
            cause = "unknown"
        self.alarm("board", "info", "boot", "firmware %s started (reset cause: %s)"
                   % (VERSION, cause))

    # -- the scan -------------------------------------------------------------------------------
    def step(self):
        """One scan (see the module docstring for the order)."""
        hw = self.hw
        us0 = hw.ticks_us()
        now = hw.ticks_ms()
        # 1. inputs
        for i in (0, 1):
            self._read_temp(i, hw.temp_raw(i))
        leak = 1 if hw.leak() else 0
        fault = 1 if hw.cable_fault() else 0
        # 2. local failsafes and the host's command
        if leak != self.leak:
            self.flush_now = True
            if leak:
                self.alarm("leak", "critical", "leak", "leak detected: valve closed")
            else:
                self.alarm("leak", "info", "leak_cleared",
                           "leak cleared; the valve stays closed until the host reopens it")
        if leak:
            self.latched = True
        if fault != self.fault:
            self.flush_now = True
            if fault:
                self.alarm("leak", "alarm", "leak_cable_fault",
                           "leak cable fault: leaks cannot be detected")
            else:
                self.alarm("leak", "info", "leak_cable_ok", "leak cable fault cleared")
        self.leak = leak
        self.fault = fault
        if self.pending is not None:
            value, self.pending = self.pending, None
            if value == 1 and self.latched:
                if leak:  # water came back since the command was checked: the trip wins
                    value = 0
                else:
                    self.latched = False
                    self.alarm("valve", "info", "leak_reset",
                               "leak trip reset by a host command")
            self.cmd_value = value
            self.cmd_ticks = now
            self.held = True
        if self.held and compat.ticks_diff(now, self.cmd_ticks) >= self.max_hold_ms:
            self.held = False
            self.alarm("valve", "warning", "hold_expired",
                       "no host command for %d ms: valve to failsafe %d"
                       % (self.max_hold_ms, self.failsafe))
        if self.latched:
            out = 0
        elif self.held:
            out = self.cmd_value
        else:
            out = self.failsafe
        # 3. outputs, watchdog
        hw.set_valve(out)
        if out != self.valve:
            self.valve = out
            self.flush_now = True
        hw.wdt_feed()
        # 4. telemetry frame
        self._frame(now)
        # 5. network
        if self.uplink is not None:
            self._network()
        elif self.flush_now or self._batch_due(now):
            self.batch.clear()
            self.flush_now = False
        self.scans += 1
        self.body_us = compat.ticks_diff(hw.ticks_us(), us0)
        if self.body_us > self.body_max_us:
            self.body_max_us = self.body_us

    def _read_temp(self, i, raw):
        gain, offset, lo, hi, rail_lo, rail_hi = self.scales[i]
        if raw <= rail_lo or raw >= rail_hi:
            value, q = None, BAD  # open or shorted sensor: no reading at all
        else:
            value = raw * gain + offset
            q = GOOD if lo <= value <= hi else BAD  # outside physics: flagged, not used
        if q != self.temp_q[i]:
            if q == BAD:
                self.alarm(TEMPS[i], "warning", "sensor_bad",
                           "%s: reading %s outside %s..%s degC: flagged BAD"
                           % (TEMPS[i], "none (ADC at a rail)" if value is None
                              else "%.2f" % value, lo, hi))
            elif self.scans:
                self.alarm(TEMPS[i], "info", "sensor_ok", "%s: reading back in range"
                           % TEMPS[i])
        self.temps[i] = value
        self.temp_q[i] = q

    def _frame(self, now):
        b = self.batch
        if not b.frames:
            b.base_ms = self.hw.wall_ms()
            self.batch_ticks = now
        b.frame(compat.ticks_diff(now, self.batch_ticks), 6)
        b.sample(0, self.temps[0], self.temp_q[0])
        b.sample(1, self.temps[1], self.temp_q[1])
        b.sample(2, self.leak, UNCERTAIN if self.fault else GOOD)
        b.sample(3, self.fault, GOOD)
        b.sample(4, self.hw.valve_feedback(), GOOD)
        b.sample(5, self.overruns, GOOD)

    def _batch_due(self, now):
        return (compat.ticks_diff(now, self.batch_ticks) + self.period_ms >= self.telemetry_ms
                or self.batch.full())

    def _network(self):
        up = self.uplink
        up.service(self.hw.ticks_ms())
        if not up.connected:
            if self.flush_now or self._batch_due(self.hw.ticks_ms()):
                self.batch.clear()
                self.dropped_batches += 1
                self.flush_now = False
            return
        if self.rebirth:
            self.rebirth = False
            try:
                self.birth()
            except Exception as exc:  # a failed publish: reconnect (and birth) later
                up.fail(exc)
                return
        if self.flush_now or self._batch_due(self.hw.ticks_ms()):
            self.flush_now = False
            payload = self.batch.flush(self.session, self.seq)
            if payload is not None and up.publish(self.t_telemetry, payload):
                self.seq += 1
        while self.outq and up.connected:
            topic, payload = self.outq.pop(0)
            up.publish(topic, payload)

    # -- messages out ---------------------------------------------------------------------------
    def _queue(self, topic, payload):
        if len(self.outq) >= MAX_QUEUE:
            self.outq.pop(0)
            self.dropped_messages += 1
        self.outq.append((topic, payload))

    def alarm(self, source, severity, code, message):
        """Queue an alarm record (sent at the end of this scan, or after the next connect)."""
        doc = {"PSWD_version": PSWD_VERSION, "timestamp": jsonc.format_ms(self.hw.wall_ms()),
               "site": self.site, "node": self.node, "source": source,
               "severity": severity, "message": message, "code": code}
        self._queue(self.t_alarm, jsonc.dumps(doc).encode())

    def _head(self):
        return {"PSWD_version": PSWD_VERSION,
                "timestamp": jsonc.format_ms(self.hw.wall_ms()), "site": self.site,
                "node": self.node, "role": "sensor", "firmware_version": VERSION}

    def will(self):
        """(topic, payload) of the death the broker publishes if this connection dies."""
        doc = self._head()
        doc["state"] = "offline"
        doc["session"] = self.sessions.upcoming
        doc["reason"] = "connection lost"
        return self.t_state, jsonc.dumps(doc).encode()

    def birth(self):
        """New session: JSON birth, then the CBOR birth, both retained QoS 1; seq back to 0.
        Raises if a publish fails (the uplink then drops the connection)."""
        self.session = self.sessions.next()
        self.seq = 0
        doc = self._head()
        doc["state"] = "online"
        doc["session"] = self.session
        doc["telemetry"] = {
            "encoding": "cbor", "period_ms": self.telemetry_ms,
            "points": [{"alias": a, "name": n, "unit": u, "type": TYPE_NAMES[t]}
                       for a, n, u, t in self.points]}
        client = self.uplink.client
        client.publish(self.t_state, jsonc.dumps(doc).encode(), True, 1)
        client.publish(self.t_telemetry,
                       encode_birth(self.points, self.session, self.hw.wall_ms()), True, 1)
        self.flush_now = True  # the state right away, under the new session

    # -- commands in ----------------------------------------------------------------------------
    def on_message(self, topic, payload):
        """A message on cmd/#: checked now; an accepted output command applies next scan."""
        try:
            topic = topic.decode() if isinstance(topic, (bytes, bytearray)) else topic
        except UnicodeError:
            topic = repr(topic)
        try:
            why = self._command(topic, payload)
        except Exception as exc:  # a bug here must not stop the scan
            why = ("internal", "$", "internal error: %r" % (exc,))
        if why is not None:
            self._refuse(topic, why)

    def _command(self, topic, payload):
        if not topic.startswith(self.cmd_prefix):
            return ("unknown_topic", "$", "topic %s is not one of this board's" % topic)
        kind = topic[len(self.cmd_prefix):]
        if kind == "rebirth":
            self.rebirth = True
            return None
        if kind != "output":
            return ("unknown_topic", "$", "command kind %r unknown; one of output, rebirth"
                    % kind)
        if len(payload) > MAX_CMD_BYTES:
            return ("oversized", "$", "%d bytes; at most %d" % (len(payload), MAX_CMD_BYTES))
        try:
            doc = json.loads(bytes(payload).decode())
        except (ValueError, UnicodeError) as exc:
            return ("malformed", "$", "not UTF-8 JSON: %s" % exc)
        if not isinstance(doc, dict):
            return ("malformed", "$", "expected a JSON object")
        why = self.verifier.check(doc, self.hw.wall_ms())
        if why is not None:
            return why
        # genuine and fresh from here: what it asks for
        for k in doc:
            if k not in CMD_FIELDS:
                return ("schema", k, "%s: unknown field" % k)
        if doc.get("PSWD_version") != PSWD_VERSION:
            return ("schema", "PSWD_version", "PSWD_version: expected %r, got %r"
                    % (PSWD_VERSION, doc.get("PSWD_version")))
        if doc.get("action", "set_output") != "set_output":
            return ("schema", "action", "action: only set_output is accepted, got %r"
                    % (doc.get("action"),))
        cid = doc.get("command_id", "")
        if not isinstance(cid, str) or len(cid) > 64:
            return ("schema", "command_id", "command_id: expected text of at most 64 chars")
        point = doc.get("point")
        if point != "valve":
            return ("refused", "point", "point: unknown output %r (outputs: valve)" % (point,))
        value = doc.get("value")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value not in (0, 1):
            return ("refused", "value", "value: expected 0 (close) or 1 (open), got %r"
                    % (value,))
        if value == 1 and self.latched and self.leak:
            return ("refused", "value", "value: leak trip latched and a leak is present: "
                    "the valve stays closed")
        self.pending = int(value)
        self.accepted += 1
        return None

    def _refuse(self, topic, why):
        category, field, reason = why
        self.invalid_total += 1
        now = self.hw.ticks_ms()
        since = compat.ticks_diff(now, self.err_window)
        if since >= 1000 or since < 0:  # < 0: the last answer is older than half a ticks period
            self.err_window = now
            self.err_used = 0
        if self.err_used >= ERRORS_PER_S:
            self.unanswered += 1
            return
        self.err_used += 1
        doc = {"PSWD_version": PSWD_VERSION,
               "timestamp": jsonc.format_ms(self.hw.wall_ms()), "node": self.node,
               "topic": topic, "error": reason, "field": field, "category": category,
               "invalid_total": self.invalid_total}
        self._queue(self.t_error, jsonc.dumps(doc).encode())

    # -- running --------------------------------------------------------------------------------
    def run(self, iterations=None):
        """Scan forever (or `iterations` times) at the fixed period, watchdog running."""
        hw = self.hw
        hw.wdt_start(self.cfg["wdt_ms"])
        deadline = hw.ticks_ms()
        n = 0
        while not self.stopping and (iterations is None or n < iterations):
            self.step()
            n += 1
            deadline = compat.ticks_add(deadline, self.period_ms)
            wait = compat.ticks_diff(deadline, hw.ticks_ms())
            if wait < 0:
                self.overruns += 1
                deadline = hw.ticks_ms()
            else:
                hw.sleep_ms(wait)
        if self.stopping:
            self.shutdown()

    def stop(self):
        """Ask run() to end after the current scan (it then says goodbye); any thread."""
        self.stopping = True

    def shutdown(self):
        """Publish the death (reason shutdown) and disconnect; outputs stay as they are."""
        if self.uplink is not None and self.uplink.connected:
            doc = self._head()
            doc["state"] = "offline"
            doc["session"] = self.session
            doc["reason"] = "shutdown"
            self.uplink.close(self.t_state, jsonc.dumps(doc).encode())

    def status(self):
        """Counters for tests and the REPL."""
        return {"scans": self.scans, "overruns": self.overruns, "valve": self.valve,
                "latched": self.latched, "held": self.held, "leak": self.leak,
                "accepted": self.accepted, "invalid_total": self.invalid_total,
                "session": self.session, "seq": self.seq, "body_us": self.body_us,
                "body_max_us": self.body_max_us, "dropped_batches": self.dropped_batches,
                "dropped_messages": self.dropped_messages}
