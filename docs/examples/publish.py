"""Publish triggers from Python: with spoolq installed, and with nothing but the stdlib.

    python3 publish.py SPOOL_DIR
"""

import json
import os
import sys
import tempfile

spool = sys.argv[1]

# 1. With spoolq: atomic (temp file, fsync, rename, fsync of the directory).
import spoolq  # noqa: E402

path = spoolq.submit(spool, argv=["echo", "published with spoolq.submit"], lane="default")
print(path)

# 2. Without spoolq (the same rules hold for any language): write a JSON trigger under a
#    name that does not match the pattern, in the same directory, then rename it.
doc = {"argv": ["echo", "published by hand"], "retries": 1, "timeout": "10m"}
fd, tmp = tempfile.mkstemp(dir=spool, prefix=".", suffix=".part")
with os.fdopen(fd, "w") as fh:
    json.dump(doc, fh)
    fh.flush()
    os.fsync(fh.fileno())
os.chmod(tmp, 0o644)
final = os.path.join(spool, "by-hand.trigger")
os.rename(tmp, final)
print(final)
