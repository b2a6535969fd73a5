"""`python -m lakerag.cli`: the same as the `lakerag` command."""
from lakerag.cli import main

raise SystemExit(main())
