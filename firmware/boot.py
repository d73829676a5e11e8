# Runs before main.py on every reset: nothing that can fail or block; the valve pin is set
# to its failsafe level by main.py's first action (pswd_node.hw.Board).
import gc

gc.collect()
