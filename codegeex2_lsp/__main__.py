from codegeex2_lsp.cli import main

raise SystemExit(main())
