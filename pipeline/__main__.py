"""``python -m pipeline …``: the same commands as the ``streamflow`` console script."""

from pipeline.cli import main

raise SystemExit(main())
