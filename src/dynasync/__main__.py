from dynasync.cli import main

raise SystemExit(main())
