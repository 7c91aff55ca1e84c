"""``python -m tensorferry``: the ``tensorferry`` command."""

from tensorferry.cli import main

raise SystemExit(main())
