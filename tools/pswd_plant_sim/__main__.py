"""`python -m pswd_plant_sim --config FILE`: the same as the pswd-plant-sim command."""

import sys

from pswd_plant_sim.cli import main

sys.exit(main())
