from megc_vqa.cli import main

raise SystemExit(main())
