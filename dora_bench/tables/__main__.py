import sys

from dora_bench.tables.cli import main

sys.exit(main())
