"""PSWD Edge: PLC-style edge controller runtime for AI data-center power and cooling plant."""

__version__ = "0.1.0"
# The PSWD message version every message we send carries, and the one we accept.
PSWD_VERSION = "1.0"
