"""``python -m tests.chaos``: run the chaos soak (see `tests.chaos.soak`)."""

from tests.chaos.soak import main

raise SystemExit(main())
