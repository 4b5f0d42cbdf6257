from hailo_repl.entry import main

raise SystemExit(main())
