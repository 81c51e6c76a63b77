import sys

from ferrobatch.bench.runner import main

sys.exit(main())
