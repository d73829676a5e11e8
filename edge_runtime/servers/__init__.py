"""Servers a node runs beside its scan: OPC UA for BMS clients, HTTPS for spec Table 3."""
