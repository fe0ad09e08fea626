import sys

from statevad.cli import main

sys.exit(main())
