"""The coordinator's answers carry PackedPublishProperties: the same bytes paho would send."""

from __future__ import annotations

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_runtime.federation.mqtt import PackedPublishProperties


@pytest.mark.timeout(10)
@pytest.mark.parametrize(("topic", "data"), [
    ("pswd/v1/s/workload/reply/a", b"\x00\x01corr"),
    (None, b"x" * 200),             # a two-byte property length
    ("t/" * 100, None),
    ("r/\u00fc\u00e9", b""),        # UTF-8 topic, empty correlation data
])
def test_packs_like_paho(topic: str | None, data: bytes | None) -> None:
    ref = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    if topic is not None:
        ref.ResponseTopic = topic
    if data is not None:
        ref.CorrelationData = data
    ours = PackedPublishProperties(topic, data)
    assert ours.pack() == ref.pack()
    assert (ours.ResponseTopic, ours.CorrelationData) == (topic, data)


@pytest.mark.timeout(10)
def test_refuses_oversized_correlation_data() -> None:
    with pytest.raises(ValueError, match="correlation data"):
        PackedPublishProperties(None, b"x" * 70000)
