from localapi.server import main

raise SystemExit(main())
