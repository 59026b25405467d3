import sys

from stgcmt.cli import main

sys.exit(main())
