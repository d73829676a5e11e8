"""PSWD Edge: PLC-style edge controller runtime for AI data-center power and cooling plant."""

__version__ = "0.1.0"
