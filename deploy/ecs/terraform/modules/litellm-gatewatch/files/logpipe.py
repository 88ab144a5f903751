# Copies the proxy's stdout+stderr to the container log (awslogs) AND to a size-rotated file
# on the shared log volume, which gatewatch tails. Inlined into the task definition as the
# LITELLM_LOGPIPE environment variable (`python3 -c "$LITELLM_LOGPIPE"`); kept here readable.
# Rotation is by rename (proxy.log -> proxy.log.1), which gatewatch's tailer follows.
import os
import sys

path = os.environ.get("LITELLM_LOG_FILE", "/var/log/litellm/proxy.log")
limit = int(os.environ.get("LITELLM_LOG_MAX_BYTES", "52428800"))
out = open(path, "ab")
for line in sys.stdin.buffer:
    sys.stdout.buffer.write(line)
    sys.stdout.buffer.flush()
    out.write(line)
    out.flush()
    if out.tell() >= limit:
        out.close()
        os.replace(path, path + ".1")
        out = open(path, "ab")
