"""Stand-ins for the board-only modules main.py needs, written to the VM by the boot test.

Each constant below becomes one module on the VM's /lib (the VM has no network, ntptime,
socket or umqtt): network (Wi-Fi that connects at once), ntptime (fails once, then sets),
socket (constants only: the fake MQTT client opens none), umqtt.simple (the MQTTClient of
tests/firmware/fakemqtt.py on one shared FakeBroker).
"""

NETWORK = '''
STA_IF = 0
state = {"connected": False, "ssid": None, "password": None}


class WLAN:
    def __init__(self, mode):
        self.mode = mode

    def active(self, flag=None):
        return True

    def isconnected(self):
        return state["connected"]

    def connect(self, ssid, password):
        state.update(connected=True, ssid=ssid, password=password)
'''

NTPTIME = '''
host = "pool.ntp.org"
calls = []


def settime():
    calls.append(host)
    if len(calls) == 1:
        raise OSError("ETIMEDOUT (fake)")
'''

SOCKET = '''
AF_INET = 2
SOCK_STREAM = 1


def getaddrinfo(host, port, *args):
    return [(AF_INET, SOCK_STREAM, 0, "", (host, port))]


class socket:
    pass
'''

UMQTT_SIMPLE = '''
from fakemqtt import FakeBroker, FakeClient

broker = FakeBroker()


class MQTTClient(FakeClient):
    def __init__(self, client_id, server, port=0, user=None, password=None, keepalive=0,
                 ssl=None):
        FakeClient.__init__(self, broker, client_id, keepalive)
        broker.server = (server, port)
'''

MODULES = {"/lib/network.py": NETWORK, "/lib/ntptime.py": NTPTIME, "/lib/socket.py": SOCKET,
           "/lib/umqtt/__init__.py": "", "/lib/umqtt/simple.py": UMQTT_SIMPLE}
