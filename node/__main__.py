"""``python -m node`` is ``printnode``."""
from node.cli import main

raise SystemExit(main())
