#!/bin/sh
# What students may see of the instructor's checkout, and nbgrader's exchange (assignments/INSTRUCTOR.md,
# "On JupyterHub"). Run as root:   sh deploy/jupyterhub/permissions.sh INSTRUCTOR [CHECKOUT] [EXCHANGE]
#
# Students run the course's environment (CHECKOUT/.venv) and import course_utils from the checkout
# (the environment's editable install points there), and read MNIST (CHECKOUT/data): read and
# execute for everyone. They may pass through the checkout's folder but not list it, and nothing
# else in it is theirs to read: the lab's solutions, the hidden checks, the gradebook, the tests.
set -eu
instructor=$1
checkout=${2:-/srv/optimizers-course}
exchange=${3:-/srv/nbgrader/exchange}

chown -R "$instructor" "$checkout"
chmod 0711 "$checkout"
for entry in "$checkout"/* "$checkout"/.[!.]*; do
  [ -e "$entry" ] || continue
  case "${entry##*/}" in
    .venv|course_utils|data) chmod -R a+rX "$entry" ;;
    *) chmod -R go-rwx "$entry" ;;
  esac
done

# nbgrader's exchange: every user releases, fetches and submits through it (as nbgrader's docs set it up).
mkdir -p "$exchange"
chmod 0777 "$exchange"
echo "students can use $checkout/.venv, $checkout/course_utils and $checkout/data; the exchange is $exchange"
