"""`python -m dynasync`: the same as the `dynasync` command."""

from dynasync.cli import main

raise SystemExit(main())
