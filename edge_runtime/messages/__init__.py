"""PSWD messages: Annex A JSON (announcement/response) and the CBOR telemetry codec. Sans-IO."""
