from voltui.cli import main

raise SystemExit(main())
