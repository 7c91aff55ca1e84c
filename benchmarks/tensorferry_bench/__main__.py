"""``python -m tensorferry_bench``: run the benchmark."""

from ._cli import main

raise SystemExit(main())
