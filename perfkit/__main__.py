import sys

from perfkit.app.cli import main

sys.exit(main())
