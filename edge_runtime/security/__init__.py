"""Security: PKI for TLS (MQTT, HTTPS, OPC UA)."""
