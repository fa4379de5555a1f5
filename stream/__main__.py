from __future__ import annotations

import sys

from stream.cli.main import main

sys.exit(main())
