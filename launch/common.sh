# shellcheck shell=bash
# Sourced by the launch scripts: their usage errors, --dry-run and shell-quoted printing.
# A script sets USAGE (its usage lines) before sourcing this; then `read_options "$@"` sets
# DRY_RUN (1 with --dry-run) and ARGS (the arguments after the options).

usage() {
  printf '%s\n' "${USAGE[@]}" >&2
  echo "error: $1" >&2
  exit 2
}
# A command as a shell reads it back: each word quoted only where it needs to be.
show() {
  local w s=()
  for w in "$@"; do
    if [[ $w =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then s+=("$w"); else s+=("${w@Q}"); fi
  done
  echo "${s[*]}"
}
run() { if ((DRY_RUN)); then show "$@"; else "$@"; fi; }
# Options come first; FIRST names the first argument after them, for the error message.
read_options() {
  local first=$1
  shift
  DRY_RUN=0
  while [[ $# -gt 0 && $1 == -* ]]; do
    case $1 in
      --dry-run) DRY_RUN=1; shift ;;
      *) usage "unknown option $1 (options come before $first)" ;;
    esac
  done
  # shellcheck disable=SC2034  # read by the script that sourced this file
  ARGS=("$@")
}
