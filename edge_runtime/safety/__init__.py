"""Safety: watchdog, failsafe image, interlocks (run last every scan)."""
