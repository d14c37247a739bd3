from imgclass.cli import main

raise SystemExit(main())
