from b2b.cli import main

raise SystemExit(main())
