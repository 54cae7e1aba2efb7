from lmdm_bridge.cli import main

raise SystemExit(main())
