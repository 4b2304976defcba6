import sys

from openkcm.cli import main

sys.exit(main())
