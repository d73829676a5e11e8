# Freeze the sensor node into a MicroPython firmware image: its bytecode then lives in flash,
# not on the heap (38 KB of a 64 KB heap when loaded as .mpy; bench/firmware.py). Build:
#
#   make -C ports/rp2 BOARD=RPI_PICO_W FROZEN_MANIFEST=/path/to/firmware/manifest.py
#   make -C ports/esp32 BOARD=ESP32_GENERIC FROZEN_MANIFEST=/path/to/firmware/manifest.py
#
# The board's own manifest keeps what the board needs (Wi-Fi driver, network, ntptime);
# for a board without a manifest.py of its own include "$(PORT_DIR)/boards/manifest.py".
# main.py, config.json and the key stay on the board's file system (README).
include("$(BOARD_DIR)/manifest.py")
require("umqtt.simple")
package("pswd_node")
