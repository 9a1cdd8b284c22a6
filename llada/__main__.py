from llada.cli import main

raise SystemExit(main())
