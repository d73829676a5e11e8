"""PSWD plant simulator: a simulated CDU loop, rack and battery served over Modbus TCP."""
