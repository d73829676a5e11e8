"""Field I/O: register codec (sans-IO), request planning and the Modbus driver."""
