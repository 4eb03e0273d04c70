"""``python -m tests.chaos [--events 2000] [--workers 3] [--seed N] [--kills 20]``"""

import sys

from tests.chaos.driver import main

sys.exit(main())
