"""The firmware's CBOR and telemetry encoders/decoders on golden vectors from the host.

Values travel as tagged JSON: ["i", int], ["f", float64 hex], ["s", UTF-8 hex], ["b", hex],
["a", [...]], ["m", [[k, v], ...]], ["n"], ["t"], ["F"].
"""

import binascii
import struct

from pswd_node import cbor, telemetry
from scenario_util import load_data, result


def build(v):
    tag = v[0]
    if tag == "i":
        return v[1]
    if tag == "s":
        return str(binascii.unhexlify(v[1]), "utf-8")
    if tag == "f":
        return struct.unpack(">d", binascii.unhexlify(v[1]))[0]
    if tag == "b":
        return binascii.unhexlify(v[1])
    if tag == "a":
        return [build(x) for x in v[1]]
    if tag == "m":
        return {build(k): build(x) for k, x in v[1]}
    return {"n": None, "t": True, "F": False}[tag]


def tagged(o):
    if o is None:
        return ["n"]
    if o is True:
        return ["t"]
    if o is False:
        return ["F"]
    if isinstance(o, int):
        return ["i", o]
    if isinstance(o, float):
        return ["f", binascii.hexlify(struct.pack(">d", o)).decode()]
    if isinstance(o, str):
        return ["s", binascii.hexlify(o.encode()).decode()]
    if isinstance(o, bytes):
        return ["b", binascii.hexlify(o).decode()]
    if isinstance(o, list):
        return ["a", [tagged(x) for x in o]]
    return ["m", [[tagged(k), tagged(o[k])] for k in o]]


data = load_data()
encoded = [binascii.hexlify(cbor.dumps(build(v))).decode() for v in data["encode"]]
decoded = [tagged(cbor.loads(binascii.unhexlify(h))) for h in data["decode"]]
refused = []
for h in data["bad"]:
    try:
        cbor.loads(binascii.unhexlify(h))
        refused.append(None)
    except ValueError as exc:
        refused.append(str(exc))
births = [binascii.hexlify(telemetry.encode_birth([tuple(p) for p in b["points"]],
                                                  b["session"], b["time_ms"])).decode()
          for b in data["births"]]
batches = []
for b in data["batches"]:
    bb = telemetry.BatchBuilder()
    bb.base_ms = b["base_ms"]
    for offset, samples in b["frames"]:
        bb.frame(offset, len(samples))
        for alias, value, quality in samples:
            bb.sample(alias, build(value), quality)
    batches.append(binascii.hexlify(bb.flush(b["session"], b["seq"])).decode())
result({"encoded": encoded, "decoded": decoded, "refused": refused, "births": births,
        "batches": batches})
