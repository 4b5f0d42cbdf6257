from hailo_repl.cli import main

raise SystemExit(main())
