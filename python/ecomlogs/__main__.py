import sys

from ecomlogs.cli import main

sys.exit(main())
