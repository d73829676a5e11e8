"""Federation over MQTT: topic contract, client with birth/death, store-and-forward outbox."""
