import os
import sys

from pet import cli

code = cli.main()
if cli.hard_exit:
    # `pet train` has written and closed every file and printed its summary. Skipping the interpreter's
    # shutdown (a full garbage collection of torch/transformers objects, then native destructors, while
    # torch's OpenMP workers spin at their barrier) makes it exit at once, even on a busy CPU.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
raise SystemExit(code)
