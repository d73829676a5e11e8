"""The MQTT uplink: reconnect policy, last will, birth on (re)connect, over umqtt.simple.

Uplink.service(now) is called once per scan, after the outputs are written and the watchdog
fed. Disconnected, it tries to connect when the backoff allows (first retry after
backoff_min_ms, doubling to backoff_max_ms, back to the minimum after a good connect): it
sets the will (the death the app gives for the session the next birth takes), connects with
a clean session, subscribes to cmd/#, then calls on_connect (the app publishes its births).
Connected, it takes at most MAX_MSGS (1) incoming message a scan, pings at half the keepalive
and drops a link that has been silent (no PINGRESP, nothing) for 1.5 keepalives. Any error
drops the connection: the broker publishes the will.

`make_client(client_id, host, port, keepalive)` returns an umqtt.simple.MQTTClient, or any
object with its methods (tests pass a fake); default_client_factory() makes the real one on
net.py's bounded sockets.
"""

from . import compat

# One incoming message a scan: bounds the scan's work (a flood of forged commands costs one
# MAC check a scan, the rest wait in the broker and TCP buffers).
MAX_MSGS = 1


def default_client_factory(net_timeout_ms):
    """make_client for umqtt.simple's MQTTClient on bounded sockets."""
    from . import net  # only here: the tests' VM has no socket module

    net.TIMEOUT_S = net_timeout_ms / 1000
    cls = net.mqtt_client_class()

    def make(client_id, host, port, keepalive):
        return cls(client_id, host, port=port, keepalive=keepalive)

    return make


class Uplink:
    """One MQTT connection kept up with bounded backoff."""

    def __init__(self, cfg, make_client, ticks_ms=compat.ticks_ms):
        m = cfg["mqtt"]
        self.client_id = cfg["sensor_id"].encode()  # umqtt under CPython writes bytes only
        self.host = m["host"]
        self.port = m["port"]
        self.keepalive_s = m["keepalive_s"]
        self.backoff_min = m["backoff_min_ms"]
        self.backoff_max = m["backoff_max_ms"]
        self.cmd_filter = ("pswd/v1/%s/%s/cmd/#" % (cfg["site"], cfg["sensor_id"])).encode()
        self.make_client = make_client
        self.ticks_ms = ticks_ms
        self.client = None
        self.connected = False
        self.backoff = self.backoff_min
        self.next_try = ticks_ms()
        self.last_ping = 0
        self.connects = 0
        self.failures = 0
        self.last_error = ""
        self.on_message = None  # (topic: str, payload: bytes) -> None
        self.on_connect = None  # () -> None, publishes the births
        self.will = None  # () -> (topic, payload): the death for the next session

    def service(self, now):
        """Connect if due, else take waiting messages and keep the link alive."""
        if not self.connected:
            if compat.ticks_diff(now, self.next_try) >= 0:
                self._connect(now)
            return
        try:
            for _ in range(MAX_MSGS):
                if self.client.check_msg() is None:
                    break
            sock = getattr(self.client, "sock", None)
            last_rx = getattr(sock, "last_rx", None)
            if last_rx is not None and compat.ticks_diff(
                    now, last_rx) > self.keepalive_s * 1500:
                raise OSError("link silent for %d s" % (compat.ticks_diff(now, last_rx)
                                                        // 1000))
            if compat.ticks_diff(now, self.last_ping) >= self.keepalive_s * 500:
                self.client.ping()
                self.last_ping = now
        except Exception as exc:  # any failure means: reconnect
            self._drop(now, exc)

    def _connect(self, now):
        try:
            client = self.make_client(self.client_id, self.host, self.port, self.keepalive_s)
            client.set_callback(self._deliver)
            topic, payload = self.will()
            client.set_last_will(topic, payload, retain=True, qos=1)
            self.client = client
            client.connect(clean_session=True)
            self.connected = True
            self.last_ping = self.ticks_ms()
            client.subscribe(self.cmd_filter, qos=1)
            if self.on_connect is not None:
                self.on_connect()
        except Exception as exc:
            self._drop(now, exc)
            return
        self.connects += 1
        self.backoff = self.backoff_min

    def fail(self, exc):
        """Drop the connection after an error outside service() (a publish of the app's)."""
        self._drop(self.ticks_ms(), exc)

    def _drop(self, now, exc):
        self.failures += 1
        self.last_error = repr(exc)[:120]
        self.connected = False
        client, self.client = self.client, None
        if client is not None:
            try:
                sock = getattr(client, "sock", None)
                if sock is not None:
                    sock.close()
            except Exception:  # already broken
                pass
        self.next_try = compat.ticks_add(now, self.backoff)
        self.backoff = min(self.backoff * 2, self.backoff_max)

    def _deliver(self, topic, msg, *rest):
        if self.on_message is not None:
            self.on_message(topic, msg)

    def publish(self, topic, payload, retain=False, qos=0):
        """Send if connected; False if not sent (down, or the send failed: then dropped)."""
        if not self.connected:
            return False
        try:
            self.client.publish(topic, payload, retain, qos)
            return True
        except Exception as exc:
            self._drop(self.ticks_ms(), exc)
            return False

    def close(self, topic=None, payload=None):
        """Publish a last message (the death) if connected, then disconnect cleanly."""
        if self.connected:
            try:
                if topic is not None:
                    self.client.publish(topic, payload, True, 1)
                self.client.disconnect()
            except Exception:
                pass
        self.connected = False
        self.client = None
