"""Fake umqtt.simple.MQTTClient for the firmware's uplink (VM and CPython).

A FakeBroker records what the firmware publishes and feeds it messages; its `factory` is the
uplink's make_client. `fail_connects` makes that many connect attempts raise OSError;
`fail_publish` makes the next publish raise (a dead socket).
"""


class FakeBroker:
    """What a broker would see: publishes in order, wills, subscriptions, connects."""

    def __init__(self, log=None):
        self.published = []  # (topic str, payload bytes, retain, qos)
        self.inbox = []  # (topic bytes, payload bytes) waiting for check_msg
        self.wills = []
        self.subscriptions = []
        self.connects = 0
        self.attempts = 0
        self.fail_connects = 0
        self.fail_publish = False
        self.log = log
        self.client = None

    def factory(self, client_id, host, port, keepalive):
        self.client = FakeClient(self, client_id, keepalive)
        return self.client

    def send(self, topic, payload):
        self.inbox.append((topic.encode() if isinstance(topic, str) else topic,
                           payload.encode() if isinstance(payload, str) else payload))

    def topics(self, suffix):
        return [p for p in self.published if p[0].endswith(suffix)]


class FakeClient:
    """The MQTTClient methods the uplink calls."""

    def __init__(self, broker, client_id, keepalive):
        self.broker = broker
        self.client_id = client_id
        self.keepalive = keepalive
        self.cb = None
        self.sock = None
        self.pings = 0

    def set_callback(self, f):
        self.cb = f

    def set_last_will(self, topic, msg, retain=False, qos=0):
        self.broker.wills.append((bytes(topic).decode(), bytes(msg), retain, qos))

    def connect(self, clean_session=True):
        b = self.broker
        b.attempts += 1
        if b.fail_connects > 0:
            b.fail_connects -= 1
            raise OSError("connection refused (fake)")
        b.connects += 1
        return 0

    def subscribe(self, topic, qos=0):
        self.broker.subscriptions.append((bytes(topic).decode(), qos))

    def publish(self, topic, msg, retain=False, qos=0):
        b = self.broker
        if b.fail_publish:
            b.fail_publish = False
            raise OSError("broken pipe (fake)")
        topic = bytes(topic).decode()
        b.published.append((topic, bytes(msg), retain, qos))
        if b.log is not None:
            b.log.append(("publish", topic))

    def check_msg(self):
        b = self.broker
        if not b.inbox:
            return None
        topic, msg = b.inbox.pop(0)
        if b.log is not None:
            b.log.append(("deliver", topic))
        self.cb(topic, msg)
        return 0x30

    def ping(self):
        self.pings += 1

    def disconnect(self):
        pass
