#!/usr/bin/env bash
# A LAUNCH prefix for tests: logs the command it is given to $LAUNCH_LOG, then runs it. With
# LAUNCH="srun -N1 -c2" the same recipes would run on a Slurm cluster instead.
set -euo pipefail
echo "$*" >> "${LAUNCH_LOG:?LAUNCH_LOG must name the log file}"
exec "$@"
