#!/bin/sh
# Render the nginx template deploy/nginx/nginx.conf into a configuration nginx reads.
#
#   API_SERVERS="api-1:8000 api-2:8000" NGINX_LISTEN=80 \
#     sh deploy/nginx/render.sh deploy/nginx/nginx.conf /etc/nginx/nginx.conf
#
# API_SERVERS (required): host:port of each API process, separated by spaces; the
# template's upstream `server` line is written once for each.
# NGINX_LISTEN (default 80): the server block's `listen` (a port or address:port).
# POSIX sh and awk only (busybox in the nginx:alpine image, mawk or gawk on Debian);
# fails, writing nothing, when a placeholder is left.
set -eu

template=${1:?usage: render.sh TEMPLATE OUTPUT}
output=${2:?usage: render.sh TEMPLATE OUTPUT}
: "${API_SERVERS:?set API_SERVERS to the API processes (host:port separated by spaces)}"
NGINX_LISTEN=${NGINX_LISTEN:-80}
export API_SERVERS NGINX_LISTEN

awk '
function subst(line, name, value,    at, key) {
    key = "${" name "}"
    while ((at = index(line, key)) > 0)
        line = substr(line, 1, at - 1) value substr(line, at + length(key))
    return line
}
index($0, "${API_SERVER}") > 0 {
    n = split(ENVIRON["API_SERVERS"], servers, " ")
    for (i = 1; i <= n; i++) print subst($0, "API_SERVER", servers[i])
    next
}
{ print subst($0, "NGINX_LISTEN", ENVIRON["NGINX_LISTEN"]) }
' "$template" > "$output.tmp"

if grep -n '\${' "$output.tmp" >&2; then
    rm -f "$output.tmp"
    echo "render.sh: placeholders left in $template (above)" >&2
    exit 1
fi
mv "$output.tmp" "$output"
