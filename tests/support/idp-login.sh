#!/usr/bin/env bash
# tests/support/idp-login.sh: scripted authorization-code login against tests/support/idp.mjs (needs curl).
# Usage: idp-login.sh ISSUER CLIENT_ID CLIENT_SECRET REDIRECT_URI USERNAME PASSWORD
# Prints the token endpoint's JSON answer (access_token = JWT with the user's vm_access, id_token,
# refresh_token) on stdout; exits 1 if the login or the code exchange fails. REDIRECT_URI is never contacted:
# the code is read from the Location header that points at it.
set -euo pipefail
[[ $# -eq 6 ]] || { sed -n '3,6p' "$0" >&2; exit 2; }
iss=$1 client=$2 secret=$3 redirect=$4 user=$5 pass=$6
jar="$(mktemp)"; trap 'rm -f "$jar"' EXIT
c() { curl -sS -b "$jar" -c "$jar" -o /dev/null -w '%{http_code} %{redirect_url}' "$@"; }

enc_redirect="$(printf %s "$redirect" | od -An -tx1 | tr -d ' \n' | sed 's/../%&/g')"
next="$iss/auth?client_id=$client&response_type=code&scope=openid+profile&state=s&redirect_uri=$enc_redirect"
for _ in 1 2 3 4 5 6 7 8; do
  case "$next" in
    "$redirect"*) break ;;
    */interaction/*)
      # The login form is the only interaction page; consent (if ever asked) is completed by a plain GET.
      if curl -sS -b "$jar" -c "$jar" "$next" | grep -q 'name="login"'; then
        out="$(c --data-urlencode "login=$user" --data-urlencode "password=$pass" "$next/login")"
      else
        out="$(c "$next")"
      fi ;;
    *) out="$(c "$next")" ;;
  esac
  [[ "${out%% *}" == 303 || "${out%% *}" == 302 ]] || { echo "idp-login: $next answered ${out%% *}" >&2; exit 1; }
  next="${out#* }"
done
code="$(printf %s "$next" | sed -n 's/.*[?&]code=\([^&]*\).*/\1/p')"
[[ -n "$code" ]] || { echo "idp-login: no code in $next" >&2; exit 1; }
resp="$(curl -sS -u "$client:$secret" -d grant_type=authorization_code -d "code=$code" \
  --data-urlencode "redirect_uri=$redirect" "$iss/token")"
[[ "$resp" == *'"access_token"'* ]] || { echo "idp-login: token exchange failed: $resp" >&2; exit 1; }
printf '%s\n' "$resp"
