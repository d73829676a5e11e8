"""Runtime core: clock, points, process image, scan engine, statistics."""
