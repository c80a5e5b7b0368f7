#!/bin/sh
# PID 1 of the berth test images. As PID 1 a shell ignores SIGTERM unless it
# traps it, so trap it and exit 0 at once; `sleep & wait` keeps the shell
# interruptible (a foreground `sleep` would delay the trap until it ends).
trap 'exit 0' TERM INT
echo "$SERVICE_VERSION" > /tmp/version
echo "berth test service version $SERVICE_VERSION started"
while :; do
  sleep 1 &
  wait $!
done
