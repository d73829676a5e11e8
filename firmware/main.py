"""Board entry point: config, key, board, then the scan forever (Wi-Fi and NTP from the uplink).

The valve goes to its failsafe level first (hw.Board), the scan starts at once, and the
network comes up behind it: Wi-Fi is started without waiting, and each connect attempt of
the uplink first checks Wi-Fi and, until it has worked once, sets the clock by NTP (commands
issued before the clock was set are refused: their issued-at cannot be judged; telemetry
flows either way).
"""

import gc

from pswd_node import config, hw, uplink
from pswd_node.app import App


def _wifi(cfg):
    import network
    wlan = network.WLAN(network.STA_IF)
    wlan.active(True)
    ssid = cfg["wifi"]["ssid"]
    if ssid and not wlan.isconnected():
        try:
            with open(cfg["wifi"]["password_file"]) as f:
                password = f.read().strip()
        except OSError:
            password = ""
        wlan.connect(ssid, password)
    return wlan


def main(iterations=None):
    """Run the board (forever; `iterations` scans for a test)."""
    cfg = config.load("config.json")
    board = hw.Board(cfg)  # valve at failsafe before anything else
    try:
        key = config.load_key(cfg["key_file"])
    except ValueError as exc:
        print(exc)
        key = None
    wlan = _wifi(cfg)
    real = uplink.default_client_factory(cfg["mqtt"]["net_timeout_ms"])
    clock = {"set": False}
    node = None

    def make_client(client_id, host, port, keepalive):
        if not wlan.isconnected():
            raise OSError("wifi not connected")
        if not clock["set"] and cfg["ntp_host"]:
            import ntptime
            ntptime.host = cfg["ntp_host"]
            try:  # at most ntptime's 1 s timeout; retried on the next connect if it fails
                ntptime.settime()
                clock["set"] = True
                node.verifier.not_before_ms = board.wall_ms()
            except (OSError, OverflowError) as exc:
                print("ntp:", exc, "- commands are refused until the clock is set")
        return real(client_id, host, port, keepalive)

    link = uplink.Uplink(cfg, make_client, board.ticks_ms)
    node = App(cfg, board, link, key)
    gc.collect()
    try:
        node.run(iterations)
    finally:
        node.shutdown()


if __name__ == "__main__":  # a board runs main.py as __main__
    main()
