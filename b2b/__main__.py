from b2b.tools.cli import main

raise SystemExit(main())
