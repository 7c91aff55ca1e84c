"""``python -m tensorferry.bench``: run the benchmark."""

from ._cli import main

raise SystemExit(main())
